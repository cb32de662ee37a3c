//! The sans-io engine: runs on one host, fed inputs with the time, answering with effects.
//!
//! Owns the runs of one host: their histories, run states and replay machines, and the
//! wiring between them (children report to parents, continue-as-new starts the next run).
//! Every change to a run is an appended event, announced as `Effect::Append` before any
//! effect that depends on it. Same state + same `now` + same input => same effects in the
//! same order. It never performs an effect itself.

use crate::activity::{Failure, Options};
use crate::history::{ChildOutcome, Event, History, Kind, Parent, Payload};
use crate::machine::{self, Machine};
use crate::run::{AttemptReport, ChildState, RunState};
use crate::time::Time;
use crate::workflow::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

/// Everything the world can tell the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Starts a run; idempotent by `workflow_id` while a run of it is open or after it ended.
    StartRun {
        workflow_id: String,
        workflow_type: String,
        input: Value,
    },
    ActivityCompleted {
        run_id: String,
        seq: u32,
        attempt: u32,
        output: Value,
        worker: Option<String>,
    },
    ActivityFailed {
        run_id: String,
        seq: u32,
        attempt: u32,
        failure: Failure,
        worker: Option<String>,
    },
    TimerFired {
        run_id: String,
        timer: TimerId,
    },
    Signal {
        workflow_id: String,
        signal_id: String,
        name: String,
        payload: Value,
    },
    Cancel {
        workflow_id: String,
        reason: String,
    },
}

/// The timers the engine asks for: workflow sleeps and activity timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimerId {
    Workflow {
        seq: u32,
    },
    /// Start-to-close timeout of one attempt.
    AttemptTimeout {
        seq: u32,
        attempt: u32,
    },
    /// Schedule-to-close timeout of the whole activity.
    ActivityDeadline {
        seq: u32,
    },
}

/// One attempt of an activity for the host to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityTask {
    pub workflow_id: String,
    pub run_id: String,
    pub seq: u32,
    /// 1-based.
    pub attempt: u32,
    pub activity_type: String,
    pub input: crate::history::Payload,
    pub idempotency_key: String,
    /// Do not start before this time (retry backoff, `Retry-After`).
    pub not_before: Time,
    pub options: Options,
    /// How the previous attempt failed: an invalid-output message feeds the next prompt.
    pub previous_failure: Option<Failure>,
}

/// Everything the engine can ask of the world. It hears back only through a later `Input`.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Make this event durable before carrying out any later effect.
    Append {
        run_id: String,
        event: Event,
    },
    ScheduleActivity(ActivityTask),
    CancelActivity {
        run_id: String,
        seq: u32,
    },
    StartTimer {
        run_id: String,
        timer: TimerId,
        fire_at: Time,
    },
    /// A run ended (completed, failed, canceled or continued as new).
    RunClosed {
        workflow_id: String,
        run_id: String,
        terminal: Kind,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("workflow type {0:?} is not registered")]
    UnknownWorkflowType(String),
    #[error("run {0} is not known")]
    UnknownRun(String),
    #[error("workflow {0} is not known")]
    UnknownWorkflow(String),
    #[error(transparent)]
    Machine(#[from] machine::Error),
    #[error("history of run {run_id} is malformed at event {index}: {detail}")]
    Malformed { run_id: String, index: u64, detail: String },
}

struct Run {
    events: Vec<Event>,
    state: RunState,
    machine: Machine,
}

/// The runs of one host.
pub struct Engine {
    registry: Registry,
    /// Boxed, so the map's nodes stay small for hosts holding many waiting runs.
    runs: BTreeMap<String, Box<Run>>,
    /// The latest run of each workflow id.
    latest: BTreeMap<String, String>,
}

impl Engine {
    pub fn new(registry: Registry) -> Engine {
        Engine { registry, runs: BTreeMap::new(), latest: BTreeMap::new() }
    }

    /// Crash recovery: rebuilds every run from its durable history by replaying the workflow
    /// code, then asks again for the work the histories say is pending (activities, timers),
    /// and finishes any step a crash cut off between two appends (see
    /// `finish_steps_across_runs`).
    pub fn recover(
        registry: Registry,
        histories: Vec<Vec<Event>>,
        now: Time,
        effects: &mut Vec<Effect>,
    ) -> Result<Engine, Error> {
        let mut engine = Engine::new(registry);
        let mut continuations = Vec::new();
        for events in histories {
            let state = RunState::from_events(&events).map_err(|detail| Error::Malformed {
                run_id: run_id_of(&events),
                index: events.len() as u64,
                detail,
            })?;
            let (machine, commands) = Machine::replay(&engine.registry, &events)?;
            let run_id = state.run_id.clone();
            // The latest run of a workflow id is the one that did not continue as new.
            let continued = state.status == crate::run::Status::ContinuedAsNew;
            if !continued || !engine.latest.contains_key(&state.workflow_id) {
                engine.latest.insert(state.workflow_id.clone(), run_id.clone());
            }
            engine.runs.insert(run_id.clone(), Box::new(Run { events, state, machine }));
            continuations.push((run_id, commands));
        }
        // Every run's cut-off batch of commands is appended before any input they cause
        // (a child's outcome) is, so no run gets an input in the middle of its batch.
        let mut work = VecDeque::new();
        for (run_id, commands) in continuations {
            engine.redo_pending(&run_id, now, effects);
            engine.append_commands(&run_id, now, commands, effects, &mut work);
        }
        engine.drain(now, work, effects)?;
        engine.finish_steps_across_runs(now, effects)?;
        Ok(engine)
    }

    /// One input's step may span runs (a child starts, a closed child reports to its parent,
    /// a cancel reaches children, a run continues as new), and a crash between two of its
    /// appends leaves it half done in the histories. Finishes each such step as the live
    /// engine would have; between two inputs there is none, and this appends nothing.
    fn finish_steps_across_runs(&mut self, now: Time, effects: &mut Vec<Effect>) -> Result<(), Error> {
        let mut work = VecDeque::new();
        let run_ids: Vec<String> = self.runs.keys().cloned().collect();
        for run_id in run_ids {
            let run = &self.runs[&run_id];
            let state = &run.state;
            match state.terminal.as_deref() {
                Some(Kind::WorkflowContinuedAsNew { input, next_run_id }) => {
                    if !self.runs.contains_key(next_run_id) {
                        let (workflow_type, workflow_id, parent) =
                            (state.workflow_type.clone(), state.workflow_id.clone(), state.parent.clone());
                        let (input, next_run_id) = (input.clone(), next_run_id.clone());
                        self.start_run(
                            now,
                            workflow_type,
                            workflow_id,
                            next_run_id,
                            input,
                            parent,
                            Some(run_id.clone()),
                            effects,
                            &mut work,
                        )?;
                    }
                }
                Some(terminal) => {
                    // A closed child whose outcome never reached its parent.
                    let parent = state.parent.clone();
                    if let (Some(parent), Some(outcome)) = (parent, child_outcome(terminal)) {
                        if let Some(kind) =
                            self.runs.get(&parent.run_id).and_then(|p| p.state.child_closed(parent.seq, outcome))
                        {
                            work.push_back((parent.run_id, kind));
                        }
                    }
                }
                None => {
                    // The cancel this run recorded; it reached the children started before it.
                    let cancel = run.events.iter().find_map(|e| match &e.kind {
                        Kind::CancelRequested { reason } => Some((e.index, reason.clone())),
                        _ => None,
                    });
                    let children: Vec<(u32, ChildState, u64)> = state
                        .open_children()
                        .map(|(seq, child)| (seq, child.clone(), child_started_index(&run.events, seq)))
                        .collect();
                    for (seq, child, started_index) in children {
                        let child_run = self.latest.get(&child.workflow_id).cloned();
                        let ours = child_run.as_ref().is_some_and(|c| {
                            let parent = self.runs[c].state.parent.as_ref();
                            parent.is_some_and(|p| p.run_id == run_id && p.seq == seq)
                        });
                        if !ours {
                            // Recorded as started, but the child's run never began, or its
                            // id was in use and the failure never reached this run.
                            self.start_child(
                                &run_id,
                                seq,
                                child.workflow_type,
                                child.workflow_id,
                                child.input,
                                now,
                                effects,
                                &mut work,
                            );
                            continue;
                        }
                        if let (Some(child_run), Some((cancel_index, reason))) = (child_run, &cancel) {
                            if started_index < *cancel_index {
                                if let Some(kind) = self.runs[&child_run].state.cancel(reason) {
                                    work.push_back((child_run, kind));
                                }
                            }
                        }
                    }
                }
            }
        }
        self.drain(now, work, effects)
    }

    /// Re-emits the effects that keep a recovered run's pending work alive.
    fn redo_pending(&self, run_id: &str, now: Time, effects: &mut Vec<Effect>) {
        let run = &self.runs[run_id];
        if run.state.is_closed() {
            return;
        }
        for (seq, activity) in run.state.open_activities() {
            effects.push(Effect::ScheduleActivity(ActivityTask {
                workflow_id: run.state.workflow_id.clone(),
                run_id: run_id.to_owned(),
                seq,
                attempt: activity.attempt,
                activity_type: activity.activity_type.clone(),
                input: activity.input.clone(),
                idempotency_key: activity.idempotency_key.clone(),
                not_before: activity.attempt_not_before.max(now),
                options: activity.options.clone(),
                previous_failure: activity.last_failure.clone(),
            }));
            if let Some(timeout) = activity.options.start_to_close() {
                let fire_at = activity.attempt_not_before.max(now).plus(timeout);
                effects.push(Effect::StartTimer {
                    run_id: run_id.to_owned(),
                    timer: TimerId::AttemptTimeout { seq, attempt: activity.attempt },
                    fire_at,
                });
            }
            if let Some(deadline) = activity.deadline() {
                effects.push(Effect::StartTimer {
                    run_id: run_id.to_owned(),
                    timer: TimerId::ActivityDeadline { seq },
                    fire_at: deadline,
                });
            }
        }
        for (seq, timer) in run.state.open_timers() {
            effects.push(Effect::StartTimer {
                run_id: run_id.to_owned(),
                timer: TimerId::Workflow { seq },
                fire_at: timer.fire_at,
            });
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn history(&self, run_id: &str) -> Option<History> {
        self.runs.get(run_id).map(|run| History::new(run.events.clone()))
    }

    pub fn run_state(&self, run_id: &str) -> Option<&RunState> {
        self.runs.get(run_id).map(|run| &run.state)
    }

    pub fn machine(&self, run_id: &str) -> Option<&Machine> {
        self.runs.get(run_id).map(|run| &run.machine)
    }

    /// The latest run of a workflow id.
    pub fn latest_run(&self, workflow_id: &str) -> Option<&str> {
        self.latest.get(workflow_id).map(String::as_str)
    }

    pub fn run_ids(&self) -> impl Iterator<Item = &str> {
        self.runs.keys().map(String::as_str)
    }

    /// Answers a query against the latest run of `workflow_id`.
    pub fn query(&self, workflow_id: &str, name: &str, args: &Value) -> Result<Value, Error> {
        let run_id = self.latest_run(workflow_id).ok_or_else(|| Error::UnknownWorkflow(workflow_id.to_owned()))?;
        Ok(self.runs[run_id].machine.query(name, args)?)
    }

    /// Feeds one input at time `now`; effects are appended in the order they must happen.
    pub fn handle(&mut self, now: Time, input: Input, effects: &mut Vec<Effect>) -> Result<(), Error> {
        let mut work = VecDeque::new();
        match input {
            Input::StartRun { workflow_id, workflow_type, input } => {
                if self.latest.contains_key(&workflow_id) {
                    return Ok(());
                }
                if !self.registry.contains(&workflow_type) {
                    return Err(Error::UnknownWorkflowType(workflow_type));
                }
                let run_id = first_run_id(&workflow_id);
                self.start_run(now, workflow_type, workflow_id, run_id, input.into(), None, None, effects, &mut work)?;
            }
            Input::ActivityCompleted { run_id, seq, attempt, output, worker } => {
                let state = &self.run(&run_id)?.state;
                if let Some(kind) =
                    state.activity_report(now, seq, attempt, AttemptReport::Completed { output: output.into() }, worker)
                {
                    work.push_back((run_id, kind));
                }
            }
            Input::ActivityFailed { run_id, seq, attempt, failure, worker } => {
                let state = &self.run(&run_id)?.state;
                if let Some(kind) = state.activity_report(now, seq, attempt, AttemptReport::Failed { failure }, worker)
                {
                    work.push_back((run_id, kind));
                }
            }
            Input::TimerFired { run_id, timer } => {
                let state = &self.run(&run_id)?.state;
                let kind = match timer {
                    TimerId::Workflow { seq } => state.timer_fired(seq),
                    TimerId::AttemptTimeout { seq, attempt } => state.activity_report(
                        now,
                        seq,
                        attempt,
                        AttemptReport::Failed { failure: Failure::TimedOut },
                        None,
                    ),
                    TimerId::ActivityDeadline { seq } => state.activity_deadline_passed(seq),
                };
                if let Some(kind) = kind {
                    work.push_back((run_id, kind));
                }
            }
            Input::Signal { workflow_id, signal_id, name, payload } => {
                let run_id = self
                    .latest_run(&workflow_id)
                    .ok_or_else(|| Error::UnknownWorkflow(workflow_id.clone()))?
                    .to_owned();
                if let Some(kind) = self.runs[&run_id].state.signal(&signal_id, &name, payload.into()) {
                    work.push_back((run_id, kind));
                }
            }
            Input::Cancel { workflow_id, reason } => {
                let run_id = self
                    .latest_run(&workflow_id)
                    .ok_or_else(|| Error::UnknownWorkflow(workflow_id.clone()))?
                    .to_owned();
                if let Some(kind) = self.runs[&run_id].state.cancel(&reason) {
                    work.push_back((run_id, kind));
                }
            }
        }
        self.drain(now, work, effects)
    }

    fn run(&self, run_id: &str) -> Result<&Run, Error> {
        self.runs.get(run_id).map(|run| &**run).ok_or_else(|| Error::UnknownRun(run_id.to_owned()))
    }

    /// Applies queued input events, one at a time, with everything they cause.
    fn drain(&mut self, now: Time, mut work: VecDeque<(String, Kind)>, effects: &mut Vec<Effect>) -> Result<(), Error> {
        while let Some((run_id, kind)) = work.pop_front() {
            if self.runs[&run_id].state.is_closed() {
                // Queued while the run was open (a child's outcome, a cancel), but the run
                // closed since, within this same input: a closed run records nothing more,
                // as when the child closes after its parent.
                continue;
            }
            let event = self.append(&run_id, now, kind, effects);
            if let Kind::CancelRequested { reason } = &event.kind {
                // Cancellation reaches child runs too; each reports back as `child_completed`.
                for child_id in self.open_children(&run_id) {
                    let child_run = self.latest[&child_id].clone();
                    if let Some(kind) = self.runs[&child_run].state.cancel(reason) {
                        work.push_back((child_run, kind));
                    }
                }
            }
            let commands = self.runs.get_mut(&run_id).expect("queued runs exist").machine.apply(&event)?;
            self.append_commands(&run_id, now, commands, effects, &mut work);
        }
        Ok(())
    }

    /// Appends one event to a run, checking it on the way in, and announces it.
    fn append(&mut self, run_id: &str, now: Time, kind: Kind, effects: &mut Vec<Effect>) -> Event {
        let run = self.runs.get_mut(run_id).expect("appending to a known run");
        let event = Event { index: run.events.len() as u64, time_ms: now, kind };
        // Cancellation reaches the activities still open at this moment; their cancel
        // effects follow the append of the event that decided it.
        let canceled: Vec<u32> = match event.kind {
            Kind::CancelRequested { .. } => run.state.open_activities().map(|(seq, _)| seq).collect(),
            _ => Vec::new(),
        };
        if let Err(detail) = run.state.apply(&event) {
            panic!("run {run_id}: engine produced a malformed event {event}: {detail}");
        }
        run.events.push(event.clone());
        effects.push(Effect::Append { run_id: run_id.to_owned(), event: event.clone() });
        effects.extend(canceled.into_iter().map(|seq| Effect::CancelActivity { run_id: run_id.to_owned(), seq }));
        self.follow_up(run_id, &event, effects);
        event
    }

    /// Effects that an appended event calls for (work for the host, not new events).
    fn follow_up(&self, run_id: &str, event: &Event, effects: &mut Vec<Effect>) {
        let state = &self.runs[run_id].state;
        match &event.kind {
            Kind::ActivityScheduled { seq, .. } | Kind::ActivityAttemptFailed { seq, .. } => {
                let activity = &state.activities[seq];
                let not_before = activity.attempt_not_before;
                effects.push(Effect::ScheduleActivity(ActivityTask {
                    workflow_id: state.workflow_id.clone(),
                    run_id: run_id.to_owned(),
                    seq: *seq,
                    attempt: activity.attempt,
                    activity_type: activity.activity_type.clone(),
                    input: activity.input.clone(),
                    idempotency_key: activity.idempotency_key.clone(),
                    not_before,
                    options: activity.options.clone(),
                    previous_failure: activity.last_failure.clone(),
                }));
                if let Some(timeout) = activity.options.start_to_close() {
                    let timer = TimerId::AttemptTimeout { seq: *seq, attempt: activity.attempt };
                    effects.push(Effect::StartTimer {
                        run_id: run_id.to_owned(),
                        timer,
                        fire_at: not_before.plus(timeout),
                    });
                }
                if let (Kind::ActivityScheduled { .. }, Some(deadline)) = (&event.kind, activity.deadline()) {
                    effects.push(Effect::StartTimer {
                        run_id: run_id.to_owned(),
                        timer: TimerId::ActivityDeadline { seq: *seq },
                        fire_at: deadline,
                    });
                }
            }
            Kind::TimerStarted { seq, fire_at_ms, .. } => {
                effects.push(Effect::StartTimer {
                    run_id: run_id.to_owned(),
                    timer: TimerId::Workflow { seq: *seq },
                    fire_at: *fire_at_ms,
                });
            }
            _ => {}
        }
    }

    /// Appends the commands a machine issued, and starts what they start.
    fn append_commands(
        &mut self,
        run_id: &str,
        now: Time,
        commands: Vec<Kind>,
        effects: &mut Vec<Effect>,
        work: &mut VecDeque<(String, Kind)>,
    ) {
        for kind in commands {
            let event = self.append(run_id, now, kind, effects);
            match event.kind {
                Kind::ChildStarted { seq, workflow_type, workflow_id, input } => {
                    self.start_child(run_id, seq, workflow_type, workflow_id, input, now, effects, work)
                }
                ref terminal if terminal.is_terminal() => self.close_run(run_id, now, terminal.clone(), effects, work),
                _ => {}
            }
        }
    }

    /// Starts the child that command `seq` of run `run_id` asked for, or reports at once that
    /// it cannot start.
    #[allow(clippy::too_many_arguments)] // The fields of `child_started`, plus the usual four.
    fn start_child(
        &mut self,
        run_id: &str,
        seq: u32,
        workflow_type: String,
        workflow_id: String,
        input: Payload,
        now: Time,
        effects: &mut Vec<Effect>,
        work: &mut VecDeque<(String, Kind)>,
    ) {
        let parent =
            Parent { workflow_id: self.runs[run_id].state.workflow_id.clone(), run_id: run_id.to_owned(), seq };
        if self.latest.contains_key(&workflow_id) || !self.registry.contains(&workflow_type) {
            let error = format!("cannot start child {workflow_id} of type {workflow_type}: id in use or type unknown");
            work.push_back((run_id.to_owned(), Kind::ChildCompleted { seq, outcome: ChildOutcome::Failed { error } }));
            return;
        }
        let child_run_id = first_run_id(&workflow_id);
        self.start_run(now, workflow_type, workflow_id, child_run_id, input, Some(parent), None, effects, work)
            .expect("child type checked above");
    }

    fn close_run(
        &mut self,
        run_id: &str,
        now: Time,
        terminal: Kind,
        effects: &mut Vec<Effect>,
        work: &mut VecDeque<(String, Kind)>,
    ) {
        let state = &self.runs[run_id].state;
        let (workflow_id, workflow_type, parent) =
            (state.workflow_id.clone(), state.workflow_type.clone(), state.parent.clone());
        effects.push(Effect::RunClosed {
            workflow_id: workflow_id.clone(),
            run_id: run_id.to_owned(),
            terminal: terminal.clone(),
        });
        if let Kind::WorkflowContinuedAsNew { input, next_run_id } = terminal {
            self.start_run(
                now,
                workflow_type,
                workflow_id,
                next_run_id,
                input,
                parent,
                Some(run_id.to_owned()),
                effects,
                work,
            )
            .expect("the type of a running workflow is registered");
            return;
        }
        let outcome =
            child_outcome(&terminal).unwrap_or_else(|| panic!("run {run_id}: {} is not terminal", terminal.name()));
        if let Some(parent) = parent {
            if let Some(kind) = self.runs.get(&parent.run_id).and_then(|p| p.state.child_closed(parent.seq, outcome)) {
                work.push_back((parent.run_id, kind));
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // One call site per way a run begins; a struct would only rename them.
    fn start_run(
        &mut self,
        now: Time,
        workflow_type: String,
        workflow_id: String,
        run_id: String,
        input: Payload,
        parent: Option<Parent>,
        continued_from: Option<String>,
        effects: &mut Vec<Effect>,
        work: &mut VecDeque<(String, Kind)>,
    ) -> Result<(), Error> {
        let started = Event {
            index: 0,
            time_ms: now,
            kind: Kind::WorkflowStarted {
                workflow_type,
                workflow_id: workflow_id.clone(),
                run_id: run_id.clone(),
                input,
                parent,
                continued_from,
            },
        };
        let mut state = RunState::default();
        state.apply(&started).expect("a first workflow_started is well formed");
        let (machine, commands) = Machine::new(&self.registry, &started)?;
        effects.push(Effect::Append { run_id: run_id.clone(), event: started.clone() });
        self.runs.insert(run_id.clone(), Box::new(Run { events: vec![started], state, machine }));
        self.latest.insert(workflow_id, run_id.clone());
        self.append_commands(&run_id, now, commands, effects, work);
        Ok(())
    }

    fn open_children(&self, run_id: &str) -> Vec<String> {
        self.runs[run_id]
            .state
            .open_children()
            .map(|(_, c)| c.workflow_id.clone())
            .filter(|id| self.latest.contains_key(id))
            .collect()
    }
}

/// The index of the `child_started` event of command `seq`.
fn child_started_index(events: &[Event], seq: u32) -> u64 {
    events.iter().find(|e| matches!(e.kind, Kind::ChildStarted { seq: s, .. } if s == seq)).map_or(0, |e| e.index)
}

/// How a run that ended with `terminal` ended, as its parent sees it; `None` for a run that
/// continued as new (its last run reports) or for a kind that does not end a run.
fn child_outcome(terminal: &Kind) -> Option<ChildOutcome> {
    match terminal {
        Kind::WorkflowCompleted { output } => Some(ChildOutcome::Completed { output: output.clone() }),
        Kind::WorkflowFailed { error } => Some(ChildOutcome::Failed { error: error.clone() }),
        Kind::WorkflowCanceled => Some(ChildOutcome::Canceled),
        _ => None,
    }
}

/// The first run id of a workflow id: derived, so a retried start names the same run.
pub fn first_run_id(workflow_id: &str) -> String {
    format!("r{:012x}", crate::hash::hash_parts(&[workflow_id, "first-run"]) >> 16)
}

fn run_id_of(events: &[Event]) -> String {
    match events.first().map(|e| &e.kind) {
        Some(Kind::WorkflowStarted { run_id, .. }) => run_id.clone(),
        _ => "<unknown>".to_owned(),
    }
}
