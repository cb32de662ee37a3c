//! What the debugger shows about one history: the run state at any event, and the text of
//! the detail and state panes.
//!
//! Owns `Timeline`, a history with run-state checkpoints every `CHECKPOINT_EVERY` events, so
//! the state at any event is one clone and at most that many folds away: opening a history is
//! linear in its length and moving the cursor costs the same anywhere. The panes are plain
//! lines, shared by the terminal UI and `tempest debug --at`. It never changes a history; the
//! only workflow code it runs is a replay up to the cursor, to ask which signals the code
//! awaits there, and replay performs no activity.

use std::collections::BTreeMap;
use tempest_engine::history::{ChildOutcome, Event, History, Kind};
use tempest_engine::run::{RunState, Status};
use tempest_engine::{Machine, Registry};

/// Events between two run-state checkpoints.
const CHECKPOINT_EVERY: usize = 256;

/// A loaded history, ready to be looked at event by event.
pub(crate) struct Timeline {
    pub(crate) history: History,
    /// `checkpoints[k]` is the run state after the first `k * CHECKPOINT_EVERY` events.
    checkpoints: Vec<RunState>,
    /// Activity type by command seq, so filters need no run state.
    activity_types: BTreeMap<u32, String>,
    /// This build's code for the history's workflow type, if it has it.
    registry: Option<Registry>,
}

impl Timeline {
    /// Folds the history once, keeping a checkpoint every `CHECKPOINT_EVERY` events. The
    /// history was validated on load, so every event applies.
    pub(crate) fn new(history: History) -> Timeline {
        let mut checkpoints = vec![RunState::default()];
        let mut state = RunState::default();
        let mut activity_types = BTreeMap::new();
        for (index, event) in history.events.iter().enumerate() {
            state.apply(event).expect("a loaded history is well formed");
            if let Kind::ActivityScheduled { seq, activity_type, .. } = &event.kind {
                activity_types.insert(*seq, activity_type.clone());
            }
            if (index + 1) % CHECKPOINT_EVERY == 0 {
                checkpoints.push(open_part(&mut state));
            }
        }
        let registry = tempest_scenarios::registry();
        let registry = registry.contains(&history.workflow_type).then_some(registry);
        Timeline { history, checkpoints, activity_types, registry }
    }

    pub(crate) fn len(&self) -> usize {
        self.history.events.len()
    }

    pub(crate) fn event(&self, index: usize) -> &Event {
        &self.history.events[index]
    }

    /// The run as it stood right after event `index` was appended.
    pub(crate) fn state_after(&self, index: usize) -> RunState {
        let applied = index + 1;
        let checkpoint = (applied / CHECKPOINT_EVERY).min(self.checkpoints.len() - 1);
        let mut state = self.checkpoints[checkpoint].clone();
        for event in &self.history.events[checkpoint * CHECKPOINT_EVERY..applied] {
            state.apply(event).expect("a loaded history is well formed");
        }
        state
    }

    /// The signals the workflow code awaits right after event `index`, by replaying it that
    /// far: `None` when this build has no code for the workflow type.
    fn awaited_signals(&self, index: usize) -> Option<Result<Vec<String>, String>> {
        let registry = self.registry.as_ref()?;
        let events = &self.history.events[..=index];
        let replayed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Machine::replay(registry, events)));
        Some(match replayed {
            Ok(Ok((machine, _))) => Ok(machine.snapshot().awaited_signals),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the workflow code panicked on replay".to_owned()),
        })
    }

    /// The activity type of command seq `seq`, from the event that scheduled it.
    fn activity_type(&self, seq: u32) -> &str {
        self.activity_types.get(&seq).map_or("?", String::as_str)
    }

    /// The detail pane: what event `index` says, with the facts a reader looks for first,
    /// then its whole content.
    pub(crate) fn detail_lines(&self, index: usize) -> Vec<String> {
        let event = self.event(index);
        let mut lines = vec![
            format!(
                "event {index} of {} at {} ({})",
                self.len(),
                format_ms(event.time_ms.as_ms()),
                if event.kind.is_command() {
                    "command: decided by the workflow code"
                } else {
                    "input: the world speaking"
                }
            ),
            event.kind.name().to_owned(),
        ];
        let mut fact = |label: &str, value: String| lines.push(format!("{label:<13} {value}"));
        match &event.kind {
            Kind::WorkflowStarted { workflow_type, workflow_id, run_id, parent, continued_from, .. } => {
                fact("workflow", format!("{workflow_type} id={workflow_id} run={run_id}"));
                if let Some(parent) = parent {
                    fact("parent", format!("{}/{} seq {}", parent.workflow_id, parent.run_id, parent.seq));
                }
                if let Some(from) = continued_from {
                    fact("continues", from.clone());
                }
            }
            Kind::ActivityScheduled { seq, activity_type, idempotency_key, options, .. } => {
                fact("activity", format!("seq {seq} {activity_type}"));
                fact("key", idempotency_key.clone());
                if let Some(key) = &options.rate_limit_key {
                    fact("rate limit", format!("{key} ({} tokens)", options.token_count));
                }
            }
            Kind::ActivityCompleted { seq, attempt, worker, .. } => {
                fact("activity", format!("seq {seq} {} attempt {attempt}", self.activity_type(*seq)));
                fact("worker", worker.clone().unwrap_or_else(|| "-".to_owned()));
            }
            Kind::ActivityAttemptFailed { seq, attempt, failure, retry_at_ms, worker } => {
                fact("activity", format!("seq {seq} {} attempt {attempt}", self.activity_type(*seq)));
                fact("failure", failure.to_string());
                fact("class", classify(failure));
                if let Some(ms) = failure.retry_after_ms() {
                    fact("Retry-After", format!("{ms} ms"));
                }
                fact("next attempt", format!("{} at {}", attempt + 1, format_ms(retry_at_ms.as_ms())));
                fact("worker", worker.clone().unwrap_or_else(|| "-".to_owned()));
            }
            Kind::ActivityFailed { seq, attempt, cause, failure, worker } => {
                fact("activity", format!("seq {seq} {} attempt {attempt}", self.activity_type(*seq)));
                fact("failure", failure.to_string());
                fact("class", classify(failure));
                fact("gave up", format!("{cause:?}"));
                fact("worker", worker.clone().unwrap_or_else(|| "-".to_owned()));
            }
            Kind::TimerStarted { seq, duration_ms, fire_at_ms } => {
                fact("timer", format!("seq {seq} for {}", format_ms(*duration_ms)));
                fact("deadline", format_ms(fire_at_ms.as_ms()));
            }
            Kind::TimerFired { seq } => fact("timer", format!("seq {seq}")),
            Kind::SignalReceived { signal_id, name, .. } => fact("signal", format!("{name} id={signal_id}")),
            Kind::ChildStarted { seq, workflow_type, workflow_id, .. } => {
                fact("child", format!("seq {seq} {workflow_type} id={workflow_id}"))
            }
            Kind::ChildCompleted { seq, outcome } => fact("child", format!("seq {seq} {}", child_outcome(outcome))),
            Kind::CancelRequested { .. }
            | Kind::MarkerRecorded { .. }
            | Kind::WorkflowCompleted { .. }
            | Kind::WorkflowFailed { .. }
            | Kind::WorkflowCanceled
            | Kind::WorkflowContinuedAsNew { .. } => {}
        }
        lines.push(String::new());
        let content = serde_json::to_value(event).expect("events serialize");
        let pretty = serde_json::to_string_pretty(&content).expect("values serialize");
        lines.extend(pretty.lines().map(str::to_owned));
        lines
    }

    /// The state pane: the run right after event `index`.
    pub(crate) fn state_lines(&self, index: usize) -> Vec<String> {
        let state = self.state_after(index);
        let now = self.event(index).time_ms.as_ms();
        let mut lines = vec![format!("run {} ({}) {}", state.run_id, state.workflow_type, state.status.name())];
        lines.push("pending activities:".to_owned());
        let mut any = false;
        for (seq, activity) in state.open_activities() {
            any = true;
            let due = activity.attempt_not_before.as_ms();
            let when = if due > now { format!(", due at {}", format_ms(due)) } else { String::new() };
            lines.push(format!("  seq {seq} {} attempt {}{when}", activity.activity_type, activity.attempt));
            if let Some(failure) = &activity.last_failure {
                lines.push(format!("    last failure: {failure}"));
            }
        }
        if !any {
            lines.push("  none".to_owned());
        }
        lines.push("running timers:".to_owned());
        let timers: Vec<String> = state
            .open_timers()
            .map(|(seq, timer)| {
                let left = timer.fire_at.as_ms().saturating_sub(now);
                format!("  seq {seq} fires at {} (in {})", format_ms(timer.fire_at.as_ms()), format_ms(left))
            })
            .collect();
        push_or_none(&mut lines, timers);
        lines.push("children:".to_owned());
        let children: Vec<String> = state
            .children
            .iter()
            .map(|(seq, child)| {
                let outcome = child.outcome.as_ref().map_or_else(|| "running".to_owned(), child_outcome);
                format!("  seq {seq} {} id={} {outcome}", child.workflow_type, child.workflow_id)
            })
            .collect();
        push_or_none(&mut lines, children);
        lines.push(format!("signals received: {}", state.signal_count));
        if state.status == Status::Running {
            match self.awaited_signals(index) {
                Some(Ok(names)) if names.is_empty() => lines.push("awaited signals: none".to_owned()),
                Some(Ok(names)) => lines.push(format!("awaited signals: {}", names.join(", "))),
                Some(Err(error)) => lines.push(format!("awaited signals: unknown, replay fails: {error}")),
                None => lines.push(format!(
                    "awaited signals: unknown, this build has no code for {}",
                    self.history.workflow_type
                )),
            }
        }
        if state.cancel_requested {
            lines.push("cancel requested".to_owned());
        }
        lines.push(format!("result: {}", result_so_far(&state)));
        lines
    }

    /// Every line a text search looks through for event `index`: its rendering and content.
    pub(crate) fn matches(&self, index: usize, needle_lowercase: &str) -> bool {
        let event = self.event(index);
        let line = event.to_string().to_lowercase();
        line.contains(needle_lowercase)
            || serde_json::to_string(event).expect("events serialize").to_lowercase().contains(needle_lowercase)
    }

    /// Whether event `index` is of `kind`, or concerns an activity of type `kind`.
    pub(crate) fn is_of(&self, index: usize, kind: &str) -> bool {
        let event = self.event(index);
        if event.kind.name() == kind {
            return true;
        }
        let is_activity = matches!(
            event.kind,
            Kind::ActivityScheduled { .. }
                | Kind::ActivityCompleted { .. }
                | Kind::ActivityAttemptFailed { .. }
                | Kind::ActivityFailed { .. }
        );
        is_activity && event.kind.seq().is_some_and(|seq| self.activity_type(seq) == kind)
    }
}

/// The state without its closed activities and timers. No later event of a well-formed
/// history refers to them, and the panes show only open ones, so a checkpoint keeps only what
/// is open: checkpoints then cost memory in proportion to the run's open work, not to its past.
fn open_part(state: &mut RunState) -> RunState {
    // Cloning the whole state first would copy the run's entire past at every checkpoint.
    let activities = std::mem::take(&mut state.activities);
    let timers = std::mem::take(&mut state.timers);
    let mut open = state.clone();
    state.activities = activities;
    state.timers = timers;
    open.activities.extend(state.open_activities().map(|(seq, a)| (seq, a.clone())));
    open.timers.extend(state.open_timers().map(|(seq, t)| (seq, t.clone())));
    open
}

fn push_or_none(lines: &mut Vec<String>, items: Vec<String>) {
    if items.is_empty() {
        lines.push("  none".to_owned());
    } else {
        lines.extend(items);
    }
}

/// How a failure is classified: retryable or not, and its kind.
fn classify(failure: &tempest_engine::Failure) -> String {
    let retry = if failure.is_retryable() { "retryable" } else { "not retryable" };
    format!("{} ({retry})", failure.kind())
}

fn child_outcome(outcome: &ChildOutcome) -> String {
    match outcome {
        ChildOutcome::Completed { output } => format!("completed {}", compact(output)),
        ChildOutcome::Failed { error } => format!("failed: {error}"),
        ChildOutcome::Canceled => "canceled".to_owned(),
    }
}

fn result_so_far(state: &RunState) -> String {
    match state.terminal.as_deref() {
        None => "none yet".to_owned(),
        Some(Kind::WorkflowCompleted { output }) => format!("completed {}", compact(output)),
        Some(Kind::WorkflowFailed { error }) => format!("failed: {error}"),
        Some(Kind::WorkflowContinuedAsNew { next_run_id, .. }) => format!("continued as run {next_run_id}"),
        Some(other) => other.name().to_owned(),
    }
}

pub(crate) fn compact(value: &impl std::fmt::Display) -> String {
    let text = value.to_string();
    if text.chars().count() <= 100 {
        return text;
    }
    format!("{}…", text.chars().take(100).collect::<String>())
}

/// Engine time for people: `1d 02:03:04.005` style, shortest form that fits.
pub(crate) fn format_ms(ms: u64) -> String {
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let (hours, rest) = (rest / 3_600_000, rest % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let seconds = rest as f64 / 1000.0;
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds:.3}s"),
        (0, 0, _) => format!("{minutes}m{seconds:06.3}s"),
        (0, _, _) => format!("{hours}h{minutes:02}m{seconds:06.3}s"),
        _ => format!("{days}d{hours:02}h{minutes:02}m{seconds:06.3}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_from_checkpoints_equals_a_fold_from_the_start() {
        let history = super::super::tests::long_history(CHECKPOINT_EVERY * 3 + 17);
        let timeline = Timeline::new(history.clone());
        for index in (0..timeline.len()).step_by(7).chain([CHECKPOINT_EVERY - 1, CHECKPOINT_EVERY, timeline.len() - 1])
        {
            let mut folded = RunState::from_events(&history.events[..=index]).unwrap();
            assert_eq!(open_part(&mut timeline.state_after(index)), open_part(&mut folded), "event {index}");
            assert_eq!(timeline.state_lines(index), state_lines_of(&folded, &timeline, index), "event {index}");
        }
    }

    /// The state pane from a timeline whose only checkpoint is the start, so it folds every
    /// event up to `index`.
    fn state_lines_of(folded: &RunState, timeline: &Timeline, index: usize) -> Vec<String> {
        let from_start = Timeline {
            history: timeline.history.clone(),
            checkpoints: vec![RunState::default()],
            activity_types: timeline.activity_types.clone(),
            registry: None,
        };
        assert_eq!(&from_start.state_after(index), folded);
        from_start.state_lines(index)
    }

    #[test]
    fn awaited_signals_come_from_replaying_the_code_to_the_cursor() {
        let timeline = Timeline::new(crate::debug::tests::recorded("human_approval", 3));
        let waiting = (0..timeline.len())
            .find(|i| matches!(timeline.event(*i).kind, Kind::TimerStarted { .. }))
            .expect("the approval wait has a timeout timer");
        let lines = timeline.state_lines(waiting);
        assert!(lines.contains(&"awaited signals: approval".to_owned()), "{lines:#?}");
        let lines = timeline.state_lines(0);
        assert!(lines.contains(&"awaited signals: none".to_owned()), "{lines:#?}");
        let last = timeline.state_lines(timeline.len() - 1);
        assert!(!last.iter().any(|l| l.starts_with("awaited signals")), "a closed run awaits nothing: {last:#?}");
    }

    #[test]
    fn times_read_as_durations() {
        assert_eq!(format_ms(1_250), "1.250s");
        assert_eq!(format_ms(61_000), "1m01.000s");
        assert_eq!(format_ms(3 * 86_400_000 + 3_600_000), "3d01h00m00.000s");
    }
}
