//! Run state: what a run's history says is pending, derived by a pure fold over its events.
//!
//! Owns the bookkeeping a host needs without running workflow code: which activities are
//! pending and at which attempt, which timers and children are outstanding, which signal ids
//! were already recorded, and the retry and timeout decisions that turn a host's report into
//! the next history event. `apply` is also the well-formedness check for histories read from
//! files, so it returns an error instead of panicking. It never polls workflow code.

use crate::activity::{Cause, Failure, Options};
use crate::history::{ChildOutcome, Event, Kind, Parent, Payload};
use crate::retry::Decision;
use crate::time::Time;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Running,
    Completed,
    Failed,
    Canceled,
    ContinuedAsNew,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::ContinuedAsNew => "continued",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActivityState {
    pub activity_type: String,
    pub input: Payload,
    pub idempotency_key: String,
    pub options: Options,
    pub scheduled_at: Time,
    /// The attempt now running or due, 1-based.
    pub attempt: u32,
    /// When the current attempt may start.
    pub attempt_not_before: Time,
    pub last_failure: Option<Failure>,
    pub closed: bool,
}

impl ActivityState {
    /// The schedule-to-close deadline, if any.
    pub fn deadline(&self) -> Option<Time> {
        self.options.schedule_to_close_ms.map(|ms| self.scheduled_at.plus(Duration::from_millis(ms)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimerState {
    pub fire_at: Time,
    pub closed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChildState {
    pub workflow_type: String,
    pub workflow_id: String,
    pub input: Payload,
    pub outcome: Option<ChildOutcome>,
}

/// The run as its history describes it, after the events applied so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunState {
    pub workflow_type: String,
    pub workflow_id: String,
    pub run_id: String,
    pub parent: Option<Parent>,
    pub status: Status,
    pub event_count: u64,
    pub last_time: Time,
    pub activities: BTreeMap<u32, ActivityState>,
    pub timers: BTreeMap<u32, TimerState>,
    pub children: BTreeMap<u32, ChildState>,
    pub signal_ids: BTreeSet<String>,
    pub signal_count: u64,
    pub cancel_requested: bool,
    /// The last command seq seen; command seqs strictly increase.
    pub seq_last: Option<u32>,
    /// The terminal event, once the run closed.
    pub terminal: Option<Box<Kind>>,
}

/// An input a host reports about an activity attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptReport {
    Completed { output: Payload },
    Failed { failure: Failure },
}

impl RunState {
    pub fn from_events(events: &[Event]) -> Result<RunState, String> {
        let mut state = RunState::default();
        for event in events {
            state.apply(event)?;
        }
        Ok(state)
    }

    pub fn is_closed(&self) -> bool {
        self.status != Status::Running
    }

    /// Folds one event in, checking that it may follow the events before it.
    pub fn apply(&mut self, event: &Event) -> Result<(), String> {
        if event.index != self.event_count {
            return Err(format!("index {} where {} was expected", event.index, self.event_count));
        }
        if event.time_ms < self.last_time {
            return Err(format!("time {} goes back before {}", event.time_ms, self.last_time));
        }
        self.accept(event.time_ms, &event.kind)
    }

    /// Folds one event in by content alone, without a position: the store uses this for its
    /// logical view of a run (history plus accepted inputs not yet in the history).
    pub fn accept(&mut self, time: Time, kind: &Kind) -> Result<(), String> {
        if self.event_count == 0 && !matches!(kind, Kind::WorkflowStarted { .. }) {
            return Err(format!("first event is {}, not workflow_started", kind.name()));
        }
        if self.is_closed() {
            return Err(format!("{} after the run closed", kind.name()));
        }
        if kind.is_command() {
            if let Some(seq) = kind.seq() {
                if self.seq_last.is_some_and(|last| seq <= last) {
                    return Err(format!("command seq {seq} does not follow {:?}", self.seq_last));
                }
                self.seq_last = Some(seq);
            }
        }
        self.apply_kind(time, kind)?;
        self.event_count += 1;
        self.last_time = self.last_time.max(time);
        Ok(())
    }

    fn open_activity(&mut self, seq: u32, attempt: u32) -> Result<&mut ActivityState, String> {
        let activity =
            self.activities.get_mut(&seq).ok_or_else(|| format!("activity seq {seq} was never scheduled"))?;
        if activity.closed {
            return Err(format!("activity seq {seq} already closed"));
        }
        if activity.attempt != attempt {
            return Err(format!(
                "activity seq {seq} reports attempt {attempt} but attempt {} is current",
                activity.attempt
            ));
        }
        Ok(activity)
    }

    fn apply_kind(&mut self, now: Time, kind: &Kind) -> Result<(), String> {
        match kind {
            Kind::WorkflowStarted { workflow_type, workflow_id, run_id, parent, .. } => {
                if self.event_count != 0 {
                    return Err("workflow_started after the first event".to_owned());
                }
                self.workflow_type.clone_from(workflow_type);
                self.workflow_id.clone_from(workflow_id);
                self.run_id.clone_from(run_id);
                self.parent.clone_from(parent);
            }
            Kind::ActivityScheduled { seq, activity_type, input, idempotency_key, options } => {
                self.activities.insert(
                    *seq,
                    ActivityState {
                        activity_type: activity_type.clone(),
                        input: input.clone(),
                        idempotency_key: idempotency_key.clone(),
                        options: options.clone(),
                        scheduled_at: now,
                        attempt: 1,
                        attempt_not_before: now,
                        last_failure: None,
                        closed: false,
                    },
                );
            }
            Kind::ActivityCompleted { seq, attempt, .. } => {
                self.open_activity(*seq, *attempt)?.closed = true;
            }
            Kind::ActivityAttemptFailed { seq, attempt, failure, retry_at_ms, .. } => {
                let activity = self.open_activity(*seq, *attempt)?;
                activity.attempt += 1;
                activity.attempt_not_before = *retry_at_ms;
                activity.last_failure = Some(failure.clone());
            }
            Kind::ActivityFailed { seq, attempt, failure, .. } => {
                let activity = self.open_activity(*seq, *attempt)?;
                activity.closed = true;
                activity.last_failure = Some(failure.clone());
            }
            Kind::TimerStarted { seq, fire_at_ms, .. } => {
                self.timers.insert(*seq, TimerState { fire_at: *fire_at_ms, closed: false });
            }
            Kind::TimerFired { seq } => {
                let timer = self.timers.get_mut(seq).ok_or_else(|| format!("timer seq {seq} was never started"))?;
                if timer.closed {
                    return Err(format!("timer seq {seq} fired twice or after cancellation"));
                }
                timer.closed = true;
            }
            Kind::SignalReceived { signal_id, .. } => {
                if !self.signal_ids.insert(signal_id.clone()) {
                    return Err(format!("signal {signal_id:?} recorded twice"));
                }
                self.signal_count += 1;
            }
            Kind::CancelRequested { .. } => {
                if self.cancel_requested {
                    return Err("cancel requested twice".to_owned());
                }
                self.cancel_requested = true;
                // Cancellation reaches everything pending at this moment; their late reports
                // are ignored from now on.
                for activity in self.activities.values_mut() {
                    activity.closed = true;
                }
                for timer in self.timers.values_mut() {
                    timer.closed = true;
                }
            }
            Kind::ChildStarted { seq, workflow_type, workflow_id, input } => {
                self.children.insert(
                    *seq,
                    ChildState {
                        workflow_type: workflow_type.clone(),
                        workflow_id: workflow_id.clone(),
                        input: input.clone(),
                        outcome: None,
                    },
                );
            }
            Kind::ChildCompleted { seq, outcome } => {
                let child = self.children.get_mut(seq).ok_or_else(|| format!("child seq {seq} was never started"))?;
                if child.outcome.is_some() {
                    return Err(format!("child seq {seq} completed twice"));
                }
                child.outcome = Some(outcome.clone());
            }
            Kind::MarkerRecorded { .. } => {}
            Kind::WorkflowCompleted { .. } => self.close(Status::Completed, kind),
            Kind::WorkflowFailed { .. } => self.close(Status::Failed, kind),
            Kind::WorkflowCanceled => self.close(Status::Canceled, kind),
            Kind::WorkflowContinuedAsNew { .. } => self.close(Status::ContinuedAsNew, kind),
        }
        Ok(())
    }

    fn close(&mut self, status: Status, kind: &Kind) {
        self.status = status;
        self.terminal = Some(Box::new(kind.clone()));
    }

    /// Activities whose current attempt is due or running.
    pub fn open_activities(&self) -> impl Iterator<Item = (u32, &ActivityState)> {
        self.activities.iter().filter(|(_, a)| !a.closed).map(|(seq, a)| (*seq, a))
    }

    pub fn open_timers(&self) -> impl Iterator<Item = (u32, &TimerState)> {
        self.timers.iter().filter(|(_, t)| !t.closed).map(|(seq, t)| (*seq, t))
    }

    pub fn open_children(&self) -> impl Iterator<Item = (u32, &ChildState)> {
        self.children.iter().filter(|(_, c)| c.outcome.is_none()).map(|(seq, c)| (*seq, c))
    }

    /// The event a report about attempt `attempt` of activity `seq` turns into, or `None` if
    /// the report is stale (closed activity, older attempt, canceled run): at-least-once
    /// execution, but each result is recorded once.
    pub fn activity_report(
        &self,
        now: Time,
        seq: u32,
        attempt: u32,
        report: AttemptReport,
        worker: Option<String>,
    ) -> Option<Kind> {
        if self.is_closed() {
            return None;
        }
        let activity = self.activities.get(&seq).filter(|a| !a.closed && a.attempt == attempt)?;
        Some(match report {
            AttemptReport::Completed { output } => Kind::ActivityCompleted { seq, attempt, output, worker },
            AttemptReport::Failed { failure } => {
                let decision = activity.options.retry.decide(attempt, &failure, &activity.idempotency_key);
                match decision {
                    Decision::RetryAfter(delay) => {
                        let retry_at = now.plus(delay);
                        if activity.deadline().is_some_and(|deadline| retry_at >= deadline) {
                            Kind::ActivityFailed { seq, attempt, cause: Cause::ScheduleToCloseTimeout, failure, worker }
                        } else {
                            Kind::ActivityAttemptFailed { seq, attempt, failure, retry_at_ms: retry_at, worker }
                        }
                    }
                    Decision::GiveUp(reason) => {
                        Kind::ActivityFailed { seq, attempt, cause: reason.into(), failure, worker }
                    }
                }
            }
        })
    }

    /// The event the schedule-to-close deadline of activity `seq` turns into, if still open.
    pub fn activity_deadline_passed(&self, seq: u32) -> Option<Kind> {
        if self.is_closed() {
            return None;
        }
        let activity = self.activities.get(&seq).filter(|a| !a.closed)?;
        Some(Kind::ActivityFailed {
            seq,
            attempt: activity.attempt,
            cause: Cause::ScheduleToCloseTimeout,
            failure: activity.last_failure.clone().unwrap_or(Failure::TimedOut),
            worker: None,
        })
    }

    /// The event a fired workflow timer turns into, if it is still pending.
    pub fn timer_fired(&self, seq: u32) -> Option<Kind> {
        let pending = !self.is_closed() && self.timers.get(&seq).is_some_and(|t| !t.closed);
        pending.then_some(Kind::TimerFired { seq })
    }

    /// The event a signal turns into, or `None` if this signal id is already recorded.
    pub fn signal(&self, signal_id: &str, name: &str, payload: Payload) -> Option<Kind> {
        let fresh = !self.is_closed() && !self.signal_ids.contains(signal_id);
        fresh.then(|| Kind::SignalReceived { signal_id: signal_id.to_owned(), name: name.to_owned(), payload })
    }

    pub fn cancel(&self, reason: &str) -> Option<Kind> {
        let fresh = !self.is_closed() && !self.cancel_requested;
        fresh.then(|| Kind::CancelRequested { reason: reason.to_owned() })
    }

    pub fn child_closed(&self, seq: u32, outcome: ChildOutcome) -> Option<Kind> {
        let pending = !self.is_closed() && self.children.get(&seq).is_some_and(|c| c.outcome.is_none());
        pending.then_some(Kind::ChildCompleted { seq, outcome })
    }
}
