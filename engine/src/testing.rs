//! A scripted host for tests: feeds an `Engine` inputs and keeps what its effects asked for.
//!
//! Owns nothing but bookkeeping of effects (scheduled activity attempts, started timers), so
//! tests can answer them in any order they choose. It never decides an outcome by itself.

use crate::engine::{ActivityTask, Effect, Engine, Input, TimerId};
use crate::history::Event;
use crate::time::Time;
use crate::workflow::Registry;
use std::collections::BTreeMap;

/// An engine plus the effects it has asked for and not yet been answered.
pub struct Host {
    pub engine: Engine,
    pub now: Time,
    /// Activity attempts asked for, by (run id, seq).
    pub activities: BTreeMap<(String, u32), ActivityTask>,
    /// Timers asked for, by (run id, timer).
    pub timers: BTreeMap<(String, TimerId), Time>,
    /// Every event appended, per run, in order.
    pub appended: BTreeMap<String, Vec<Event>>,
    /// Every event appended, across runs, in the order it was made durable.
    pub appended_log: Vec<(String, Event)>,
    pub closed: Vec<String>,
}

impl Host {
    pub fn new(registry: Registry) -> Host {
        Host {
            engine: Engine::new(registry),
            now: Time::ZERO,
            activities: BTreeMap::new(),
            timers: BTreeMap::new(),
            appended: BTreeMap::new(),
            appended_log: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Feeds an input at the current time, records the effects and returns them.
    pub fn feed(&mut self, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.engine.handle(self.now, input, &mut effects).expect("engine accepts the input");
        self.perform(effects.clone());
        effects
    }

    pub fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Append { run_id, event } => {
                    self.appended_log.push((run_id.clone(), event.clone()));
                    self.appended.entry(run_id).or_default().push(event);
                }
                Effect::ScheduleActivity(task) => {
                    self.activities.insert((task.run_id.clone(), task.seq), task);
                }
                Effect::CancelActivity { run_id, seq } => {
                    self.activities.remove(&(run_id, seq));
                }
                Effect::StartTimer { run_id, timer, fire_at } => {
                    self.timers.insert((run_id, timer), fire_at);
                }
                Effect::RunClosed { run_id, .. } => self.closed.push(run_id),
            }
        }
    }

    pub fn start(&mut self, workflow_type: &str, workflow_id: &str, input: serde_json::Value) -> String {
        self.feed(Input::StartRun { workflow_id: workflow_id.into(), workflow_type: workflow_type.into(), input });
        self.engine.latest_run(workflow_id).expect("run started").to_owned()
    }

    /// The open activity attempt of activity `seq` of run `run_id`.
    pub fn task_of(&self, run_id: &str, seq: u32) -> ActivityTask {
        self.activities
            .get(&(run_id.to_owned(), seq))
            .unwrap_or_else(|| panic!("no pending activity seq {seq} in run {run_id}"))
            .clone()
    }

    /// The one open activity attempt of a run with this type (panics if none or several).
    pub fn task(&self, activity_type: &str) -> ActivityTask {
        let mut found = self.activities.values().filter(|t| t.activity_type == activity_type);
        let task = found.next().unwrap_or_else(|| panic!("no pending {activity_type} activity"));
        assert!(found.next().is_none(), "several pending {activity_type} activities");
        task.clone()
    }

    /// Drops `task` from the open attempts, unless a later attempt already replaced it.
    fn forget(&mut self, task: &ActivityTask) {
        let key = (task.run_id.clone(), task.seq);
        if self.activities.get(&key).is_some_and(|open| open.attempt == task.attempt) {
            self.activities.remove(&key);
        }
    }

    pub fn complete(&mut self, task: &ActivityTask, output: serde_json::Value) -> Vec<Effect> {
        self.now = self.now.max(task.not_before);
        self.forget(task);
        self.feed(Input::ActivityCompleted {
            run_id: task.run_id.clone(),
            seq: task.seq,
            attempt: task.attempt,
            output,
            worker: None,
        })
    }

    pub fn fail(&mut self, task: &ActivityTask, failure: crate::activity::Failure) -> Vec<Effect> {
        self.now = self.now.max(task.not_before);
        self.forget(task);
        self.feed(Input::ActivityFailed {
            run_id: task.run_id.clone(),
            seq: task.seq,
            attempt: task.attempt,
            failure,
            worker: None,
        })
    }

    /// Advances time to the earliest pending timer and fires it.
    pub fn fire_next_timer(&mut self) -> Vec<Effect> {
        let (run_id, timer) =
            self.timers.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()).expect("a pending timer");
        self.fire(&run_id, timer)
    }

    /// Advances time to when timer `timer` of run `run_id` is due (if later) and fires it.
    pub fn fire(&mut self, run_id: &str, timer: TimerId) -> Vec<Effect> {
        let fire_at = self
            .timers
            .remove(&(run_id.to_owned(), timer))
            .unwrap_or_else(|| panic!("no pending timer {timer:?} in run {run_id}"));
        self.now = self.now.max(fire_at);
        self.feed(Input::TimerFired { run_id: run_id.to_owned(), timer })
    }

    pub fn cancel(&mut self, workflow_id: &str, reason: &str) -> Vec<Effect> {
        self.feed(Input::Cancel { workflow_id: workflow_id.into(), reason: reason.into() })
    }

    pub fn signal(
        &mut self,
        workflow_id: &str,
        signal_id: &str,
        name: &str,
        payload: serde_json::Value,
    ) -> Vec<Effect> {
        self.feed(Input::Signal {
            workflow_id: workflow_id.into(),
            signal_id: signal_id.into(),
            name: name.into(),
            payload,
        })
    }

    pub fn advance(&mut self, ms: u64) {
        self.now = Time(self.now.0 + ms);
    }

    /// The events of a run, in order.
    pub fn events(&self, run_id: &str) -> Vec<Event> {
        self.engine.history(run_id).expect("known run").events
    }

    /// The history of a run, one line per event.
    pub fn render(&self, run_id: &str) -> String {
        self.engine.history(run_id).expect("known run").render()
    }
}
