//! The replay machine: runs workflow code against a history, one input event at a time.
//!
//! Owns the workflow future and the state its `Ctx` futures read (results by command seq,
//! buffered signals, the cancel flag). After each input event it polls the workflow until
//! nothing more can happen, and matches every command the code issues against the command
//! events recorded next in the history; past the end of the history, commands become new
//! events. Because the workflow is polled after every single input, which future completes
//! first is decided by history order, never by polling order. It never touches the store,
//! the network or a clock.

use crate::history::{Event, Kind, Marker, Payload};
use crate::time::Time;
use crate::workflow::{Ctx, Registry, WorkflowError, WorkflowFuture};
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A replay mismatch: the code changed under a run in flight.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("run {run_id}: history diverges at event {event_index}: recorded `{recorded}`, code now issues `{issued}`")]
pub struct Nondeterminism {
    pub run_id: String,
    pub event_index: u64,
    /// The recorded event, rendered; `<end of history>` if the history had nothing there.
    pub recorded: String,
    /// The command the code issued now, rendered; `<nothing>` if it issued none.
    pub issued: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nondeterminism(#[from] Nondeterminism),
    #[error("workflow type {0:?} is not registered")]
    UnknownWorkflowType(String),
    #[error("run {run_id}: event {index} is {kind}, which cannot start a run")]
    NotAStart { run_id: String, index: u64, kind: &'static str },
    #[error("run {run_id}: query {name:?} is not defined")]
    UnknownQuery { run_id: String, name: String },
}

/// What a pending command future is waiting for.
#[derive(Debug)]
pub(crate) enum Resolution {
    Activity(Result<Payload, crate::activity::Error>),
    Timer(Result<(), WorkflowError>),
    Child(crate::history::ChildOutcome),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SignalRecord {
    pub(crate) signal_id: String,
    pub(crate) payload: Payload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    Activity,
    Timer,
    Child,
}

/// The state the workflow's `Ctx` shares with the machine.
pub(crate) struct Shared {
    pub(crate) workflow_type: String,
    pub(crate) workflow_id: String,
    pub(crate) run_id: String,
    pub(crate) seq_next: u32,
    /// Time of the input event being applied; `ctx.now()` reads it.
    pub(crate) now: Time,
    /// Recorded commands that the code must issue next, in order.
    pub(crate) expected: VecDeque<Event>,
    /// The next recorded input event, if the history continues past `expected`.
    /// Index of the next recorded input event, if the history continues past `expected`.
    pub(crate) next_input: Option<u64>,
    /// Commands issued beyond the end of the history: new events.
    pub(crate) issued: Vec<Kind>,
    pub(crate) pending: BTreeMap<u32, (PendingKind, Option<Waker>)>,
    pub(crate) resolved: BTreeMap<u32, Resolution>,
    pub(crate) signals: BTreeMap<String, VecDeque<SignalRecord>>,
    /// Futures waiting for a signal, by signal name; a list, since a run rarely waits on more
    /// than one or two names and a map node would cost more than the run's other state.
    pub(crate) signal_waiters: Vec<(String, Waker)>,
    pub(crate) cancel_requested: bool,
    pub(crate) nondeterminism: Option<Box<Nondeterminism>>,
    pub(crate) queries: BTreeMap<String, crate::workflow::QueryHandler>,
}

/// What a command issue found in the history.
pub(crate) enum Issued {
    /// Matched a recorded command; carries its marker, if it was one, whose recorded value
    /// replay returns.
    Recorded(Option<Marker>),
    New,
    /// Replay already diverged; the caller returns a dummy and the machine stops.
    Diverged,
}

impl Shared {
    pub(crate) fn next_seq(&mut self) -> u32 {
        let seq = self.seq_next;
        self.seq_next += 1;
        seq
    }

    /// Whether the code runs past the end of the recorded history.
    pub(crate) fn is_live(&self) -> bool {
        self.expected.is_empty() && self.next_input.is_none()
    }

    pub(crate) fn issue(&mut self, kind: Kind) -> Issued {
        if self.nondeterminism.is_some() {
            return Issued::Diverged;
        }
        if let Some(recorded) = self.expected.pop_front() {
            if Kind::same_command(&recorded.kind, &kind) {
                let marker = match recorded.kind {
                    Kind::MarkerRecorded { marker, .. } => Some(marker),
                    _ => None,
                };
                return Issued::Recorded(marker);
            }
            self.diverge(recorded.index, recorded.to_string(), kind.to_string());
            return Issued::Diverged;
        }
        if let Some(index) = self.next_input {
            // `Machine::replay` fills in the recorded event's text, which only it holds.
            self.diverge(index, String::new(), kind.to_string());
            return Issued::Diverged;
        }
        self.issued.push(kind);
        Issued::New
    }

    /// Version markers: `true` if this run takes the new code path of `patch_id`.
    pub(crate) fn patched(&mut self, patch_id: &str) -> bool {
        let is_recorded_patch = |e: &Event| matches!(&e.kind, Kind::MarkerRecorded { marker: Marker::Patch { patch_id: p }, .. } if p == patch_id);
        if self.expected.front().is_some_and(is_recorded_patch) {
            let seq = self.next_seq();
            let issued =
                self.issue(Kind::MarkerRecorded { seq, marker: Marker::Patch { patch_id: patch_id.to_owned() } });
            return matches!(issued, Issued::Recorded(_));
        }
        if !self.is_live() {
            // The history was recorded by code without this patch at this point: keep the
            // old path, and record nothing.
            return false;
        }
        let seq = self.next_seq();
        self.issue(Kind::MarkerRecorded { seq, marker: Marker::Patch { patch_id: patch_id.to_owned() } });
        true
    }

    fn diverge(&mut self, event_index: u64, recorded: String, issued: String) {
        self.nondeterminism =
            Some(Box::new(Nondeterminism { run_id: self.run_id.clone(), event_index, recorded, issued }));
    }

    pub(crate) fn register(&mut self, seq: u32, kind: PendingKind) {
        self.pending.insert(seq, (kind, None));
    }

    fn resolve(&mut self, seq: u32, resolution: Resolution) {
        let (_, waker) = self
            .pending
            .remove(&seq)
            .unwrap_or_else(|| panic!("run {}: seq {seq} resolved but not pending", self.run_id));
        self.resolved.insert(seq, resolution);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn wake_signal_waiters(&mut self, name: &str) {
        let (woken, waiting) = std::mem::take(&mut self.signal_waiters).into_iter().partition(|(n, _)| n == name);
        self.signal_waiters = waiting;
        for (_, waker) in woken {
            waker.wake();
        }
    }
}

/// Wakes the machine's poll loop; set by leaf futures' wakers.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A summary of the machine's live state, comparable across a live run and a replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    pub seq_next: u32,
    pub pending: Vec<(u32, PendingKind)>,
    pub buffered_signals: Vec<(String, usize)>,
    pub awaited_signals: Vec<String>,
    pub cancel_requested: bool,
    pub closed: bool,
}

/// One run's workflow code, driven by its history.
pub struct Machine {
    shared: Rc<RefCell<Shared>>,
    future: Option<WorkflowFuture>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl Machine {
    /// Builds the machine for the run started by `started`, and polls the workflow once, as
    /// after any input. Returns the machine and the commands it issued; the caller says
    /// which recorded commands follow (`expected`) and whether the history goes on.
    fn start(
        registry: &Registry,
        started: &Event,
        expected: VecDeque<Event>,
        next_input: Option<u64>,
    ) -> Result<(Machine, Vec<Kind>), Error> {
        let Kind::WorkflowStarted { workflow_type, workflow_id, run_id, input, .. } = &started.kind else {
            return Err(Error::NotAStart { run_id: String::new(), index: started.index, kind: started.kind.name() });
        };
        let factory = registry.get(workflow_type).ok_or_else(|| Error::UnknownWorkflowType(workflow_type.clone()))?;
        let shared = Rc::new(RefCell::new(Shared {
            workflow_type: workflow_type.clone(),
            workflow_id: workflow_id.clone(),
            run_id: run_id.clone(),
            seq_next: 1,
            now: started.time_ms,
            expected,
            next_input,
            issued: Vec::new(),
            pending: BTreeMap::new(),
            resolved: BTreeMap::new(),
            signals: BTreeMap::new(),
            signal_waiters: Vec::new(),
            cancel_requested: false,
            nondeterminism: None,
            queries: BTreeMap::new(),
        }));
        let future = factory(Ctx::new(shared.clone()), input.clone());
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut machine = Machine { shared, future: Some(future), flag, waker };
        let commands = machine.poll()?;
        Ok((machine, commands))
    }

    /// Starts a new run live (nothing recorded after `started`).
    pub fn new(registry: &Registry, started: &Event) -> Result<(Machine, Vec<Kind>), Error> {
        Machine::start(registry, started, VecDeque::new(), None)
    }

    /// Rebuilds a run from its recorded history, checking every command against it. Returns
    /// the machine and the commands the code issues past the end of the history (empty when
    /// the history ends at a decision point, as histories written by a host do).
    pub fn replay(registry: &Registry, events: &[Event]) -> Result<(Machine, Vec<Kind>), Error> {
        Machine::replay_observing(registry, events, |_, _| {})
    }

    /// `replay`, showing `after_input` the machine after each input event past the first
    /// (with that event's index), once the workflow has reacted to it.
    pub fn replay_observing(
        registry: &Registry,
        events: &[Event],
        mut after_input: impl FnMut(usize, &Machine),
    ) -> Result<(Machine, Vec<Kind>), Error> {
        let first = events.first().expect("replay needs at least workflow_started");
        let (expected, next) = batch_after(events, 0);
        let fill_recorded = |error: Error| match error {
            Error::Nondeterminism(mut nondeterminism) if nondeterminism.recorded.is_empty() => {
                nondeterminism.recorded = events[nondeterminism.event_index as usize].to_string();
                Error::Nondeterminism(nondeterminism)
            }
            other => other,
        };
        let (mut machine, mut commands) =
            Machine::start(registry, first, expected, next.map(|i| i as u64)).map_err(fill_recorded)?;
        let mut cursor = next;
        while let Some(index) = cursor {
            let (expected, next) = batch_after(events, index);
            {
                let mut shared = machine.shared.borrow_mut();
                shared.expected = expected;
                shared.next_input = next.map(|i| i as u64);
            }
            commands = machine.apply_inner(&events[index]).map_err(fill_recorded)?;
            after_input(index, &machine);
            cursor = next;
        }
        Ok((machine, commands))
    }

    /// Applies one new input event (already appended by the host) and returns the commands
    /// the workflow issues in response, in order.
    pub fn apply(&mut self, event: &Event) -> Result<Vec<Kind>, Error> {
        {
            let mut shared = self.shared.borrow_mut();
            shared.expected.clear();
            shared.next_input = None;
        }
        self.apply_inner(event)
    }

    fn apply_inner(&mut self, event: &Event) -> Result<Vec<Kind>, Error> {
        assert!(!event.kind.is_command(), "run {}: event {} is a command, not an input", self.run_id(), event.index);
        {
            let mut shared = self.shared.borrow_mut();
            shared.now = event.time_ms;
            apply_input(&mut shared, &event.kind);
        }
        self.poll()
    }

    /// Polls until the workflow can make no more progress, then checks the batch.
    fn poll(&mut self) -> Result<Vec<Kind>, Error> {
        while let Some(future) = self.future.as_mut() {
            self.flag.0.store(false, Ordering::Relaxed);
            let mut cx = Context::from_waker(&self.waker);
            let poll = future.as_mut().poll(&mut cx);
            if self.shared.borrow().nondeterminism.is_some() {
                break;
            }
            if let Poll::Ready(result) = poll {
                self.future = None;
                let terminal = self.terminal_command(result);
                self.shared.borrow_mut().issue(terminal);
                break;
            }
            if !self.flag.0.load(Ordering::Relaxed) {
                break;
            }
        }
        let mut shared = self.shared.borrow_mut();
        if let Some(error) = shared.nondeterminism.take() {
            return Err((*error).into());
        }
        if let Some(missing) = shared.expected.pop_front() {
            // History recorded a command here that the code no longer issues.
            return Err(Nondeterminism {
                run_id: shared.run_id.clone(),
                event_index: missing.index,
                recorded: missing.to_string(),
                issued: "<nothing>".to_owned(),
            }
            .into());
        }
        Ok(std::mem::take(&mut shared.issued))
    }

    fn terminal_command(&self, result: Result<Payload, WorkflowError>) -> Kind {
        match result {
            Ok(output) => Kind::WorkflowCompleted { output },
            Err(WorkflowError::Canceled) => Kind::WorkflowCanceled,
            Err(WorkflowError::ContinueAsNew { input }) => {
                let shared = self.shared.borrow();
                let next_run_id = crate::workflow::next_run_id(&shared.workflow_id, &shared.run_id);
                Kind::WorkflowContinuedAsNew { input, next_run_id }
            }
            Err(error) => Kind::WorkflowFailed { error: error.to_string() },
        }
    }

    pub fn is_closed(&self) -> bool {
        self.future.is_none()
    }

    pub fn run_id(&self) -> String {
        self.shared.borrow().run_id.clone()
    }

    /// Answers a query from the handlers the workflow registered; read-only.
    pub fn query(&self, name: &str, args: &Value) -> Result<Value, Error> {
        let shared = self.shared.borrow();
        let handler = shared
            .queries
            .get(name)
            .ok_or_else(|| Error::UnknownQuery { run_id: shared.run_id.clone(), name: name.to_owned() })?;
        Ok(handler(args))
    }

    /// Signals of `name` received but not yet taken by the workflow.
    pub fn buffered_signal_count(&self, name: &str) -> usize {
        self.shared.borrow().signals.get(name).map_or(0, |queue| queue.len())
    }

    pub fn snapshot(&self) -> Snapshot {
        let shared = self.shared.borrow();
        Snapshot {
            seq_next: shared.seq_next,
            pending: shared.pending.iter().map(|(seq, (kind, _))| (*seq, *kind)).collect(),
            buffered_signals: shared
                .signals
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(n, q)| (n.clone(), q.len()))
                .collect(),
            awaited_signals: {
                let mut names: Vec<String> = shared.signal_waiters.iter().map(|(n, _)| n.clone()).collect();
                names.sort();
                names.dedup();
                names
            },
            cancel_requested: shared.cancel_requested,
            closed: self.future.is_none(),
        }
    }

    pub fn workflow_type(&self) -> String {
        self.shared.borrow().workflow_type.clone()
    }
}

/// The recorded commands right after `events[index]` and the index of the next input.
fn batch_after(events: &[Event], index: usize) -> (VecDeque<Event>, Option<usize>) {
    let mut expected = VecDeque::new();
    let mut next = index + 1;
    while next < events.len() && events[next].kind.is_command() {
        expected.push_back(events[next].clone());
        next += 1;
    }
    (expected, (next < events.len()).then_some(next))
}

fn apply_input(shared: &mut Shared, kind: &Kind) {
    match kind {
        Kind::ActivityCompleted { seq, output, .. } => {
            shared.resolve(*seq, Resolution::Activity(Ok(output.clone())));
        }
        Kind::ActivityFailed { seq, attempt, cause, failure, .. } => {
            let activity_type = String::new();
            let error = crate::activity::Error {
                activity_type,
                seq: *seq,
                attempt_count: *attempt,
                cause: cause.clone(),
                last_failure: failure.clone(),
            };
            shared.resolve(*seq, Resolution::Activity(Err(error)));
        }
        Kind::TimerFired { seq } => shared.resolve(*seq, Resolution::Timer(Ok(()))),
        Kind::ChildCompleted { seq, outcome } => shared.resolve(*seq, Resolution::Child(outcome.clone())),
        Kind::SignalReceived { signal_id, name, payload } => {
            shared
                .signals
                .entry(name.clone())
                .or_default()
                .push_back(SignalRecord { signal_id: signal_id.clone(), payload: payload.clone() });
            shared.wake_signal_waiters(name);
        }
        Kind::CancelRequested { .. } => {
            shared.cancel_requested = true;
            let cancelable: Vec<(u32, PendingKind)> = shared
                .pending
                .iter()
                .map(|(seq, (kind, _))| (*seq, *kind))
                .filter(|(_, kind)| *kind != PendingKind::Child)
                .collect();
            for (seq, kind) in cancelable {
                let resolution = match kind {
                    PendingKind::Activity => Resolution::Activity(Err(crate::activity::Error {
                        activity_type: String::new(),
                        seq,
                        attempt_count: 0,
                        cause: crate::activity::Cause::Canceled,
                        last_failure: crate::activity::Failure::Application {
                            kind: "canceled".to_owned(),
                            message: "run canceled".to_owned(),
                        },
                    })),
                    PendingKind::Timer => Resolution::Timer(Err(WorkflowError::Canceled)),
                    PendingKind::Child => unreachable!("children are filtered out above"),
                };
                shared.resolve(seq, resolution);
            }
            for (_, waker) in std::mem::take(&mut shared.signal_waiters) {
                waker.wake();
            }
        }
        Kind::WorkflowStarted { .. } | Kind::ActivityAttemptFailed { .. } => {}
        Kind::ActivityScheduled { .. }
        | Kind::TimerStarted { .. }
        | Kind::ChildStarted { .. }
        | Kind::MarkerRecorded { .. }
        | Kind::WorkflowCompleted { .. }
        | Kind::WorkflowFailed { .. }
        | Kind::WorkflowCanceled
        | Kind::WorkflowContinuedAsNew { .. } => unreachable!("commands are not inputs"),
    }
}
