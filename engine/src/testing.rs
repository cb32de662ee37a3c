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
            closed: Vec::new(),
        }
    }

    /// Feeds an input at the current time and records the effects.
    pub fn feed(&mut self, input: Input) {
        let mut effects = Vec::new();
        self.engine.handle(self.now, input, &mut effects).expect("engine accepts the input");
        self.perform(effects);
    }

    pub fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Append { run_id, event } => self.appended.entry(run_id).or_default().push(event),
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

    /// The one open activity attempt of a run with this type (panics if none or several).
    pub fn task(&self, activity_type: &str) -> ActivityTask {
        let mut found = self.activities.values().filter(|t| t.activity_type == activity_type);
        let task = found.next().unwrap_or_else(|| panic!("no pending {activity_type} activity"));
        assert!(found.next().is_none(), "several pending {activity_type} activities");
        task.clone()
    }

    pub fn complete(&mut self, task: &ActivityTask, output: serde_json::Value) {
        self.now = self.now.max(task.not_before);
        self.activities.remove(&(task.run_id.clone(), task.seq));
        self.feed(Input::ActivityCompleted {
            run_id: task.run_id.clone(),
            seq: task.seq,
            attempt: task.attempt,
            output,
            worker: None,
        });
    }

    pub fn fail(&mut self, task: &ActivityTask, failure: crate::activity::Failure) {
        self.now = self.now.max(task.not_before);
        self.activities.remove(&(task.run_id.clone(), task.seq));
        self.feed(Input::ActivityFailed {
            run_id: task.run_id.clone(),
            seq: task.seq,
            attempt: task.attempt,
            failure,
            worker: None,
        });
    }

    /// Advances time to the earliest pending timer and fires it.
    pub fn fire_next_timer(&mut self) {
        let (key, fire_at) =
            self.timers.iter().min_by_key(|(_, at)| **at).map(|(k, at)| (k.clone(), *at)).expect("a pending timer");
        self.timers.remove(&key);
        self.now = self.now.max(fire_at);
        self.feed(Input::TimerFired { run_id: key.0, timer: key.1 });
    }

    pub fn signal(&mut self, workflow_id: &str, signal_id: &str, name: &str, payload: serde_json::Value) {
        self.feed(Input::Signal {
            workflow_id: workflow_id.into(),
            signal_id: signal_id.into(),
            name: name.into(),
            payload,
        });
    }

    pub fn advance(&mut self, ms: u64) {
        self.now = Time(self.now.0 + ms);
    }

    /// The history of a run, one line per event.
    pub fn render(&self, run_id: &str) -> String {
        self.engine.history(run_id).expect("known run").render()
    }
}
