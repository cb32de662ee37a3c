//! The store protocol: histories, task queues, durable timers and leases as a state machine.
//!
//! Owns the rules every store implementation keeps: starting a run is idempotent by
//! workflow id; accepted inputs (activity reports, timer firings, signals, cancellations)
//! wait in a run's durable inbox until a workflow task moves them into the history, in the
//! order the workflow code saw them, next to the commands it issued; every write is
//! conditional (append only at the expected next event index, complete a task only with its
//! current fencing token, before its lease expires); a signal is acknowledged only once it is
//! in a history. Each write is returned as `Record`s that the host must make durable before it
//! replies; `Store::recover` rebuilds the same state from those records. It never touches a
//! disk or a clock itself, and leases are deliberately not durable: after a restart every
//! task is claimable again and older tokens (an older epoch) are rejected.

use crate::engine::ActivityTask;
use crate::history::{ChildOutcome, Event, History, Kind, Parent};
use crate::run::{AttemptReport, RunState, Status};
use crate::time::Time;
use crate::Failure;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

mod run_key;
use run_key::RunKey;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// How long a worker may hold a workflow task, in ms.
    pub workflow_lease_ms: u64,
    /// How long a run's workflow task is kept for the worker that has the run cached (so it
    /// need not replay) before any worker may take it, in ms.
    pub sticky_ms: u64,
    /// How long an activity attempt is leased without a heartbeat, in ms; capped by the
    /// activity's start-to-close timeout.
    pub activity_lease_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { workflow_lease_ms: 10_000, sticky_ms: 5_000, activity_lease_ms: 60_000 }
    }
}

/// One durable write. Replaying the records in order rebuilds the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The store (re)started; tokens of earlier epochs are stale.
    Epoch { epoch: u32 },
    /// An accepted input waiting for a workflow task.
    Inbox { run_id: String, time_ms: Time, kind: Kind },
    /// A completed workflow task: `events` appended, the first `consumed` inbox inputs
    /// moved into them.
    Append { run_id: String, time_ms: Time, events: Vec<Event>, consumed: usize },
}

impl Record {
    /// The records a store would have written while `events` became a run's history: each
    /// input accepted into the inbox, then moved into the history with the commands it caused.
    /// A last input that no command follows stays in the inbox, accepted but not yet moved: a
    /// prefix cut right after an input must still let the workflow code react to it, and the
    /// next workflow task appends it first, in its place. `Store::recover` over them rebuilds
    /// the run as it stood after its last event; a fork starts its world from a recorded
    /// history's prefix this way, through the recovery path.
    pub fn of_history(events: &[Event]) -> Vec<Record> {
        let mut records = Vec::new();
        let Some(run_id) = events.first().and_then(|e| match &e.kind {
            Kind::WorkflowStarted { run_id, .. } => Some(run_id.clone()),
            _ => None,
        }) else {
            return records;
        };
        let mut segment: Vec<Event> = Vec::new();
        let flush = |segment: &mut Vec<Event>, records: &mut Vec<Record>| {
            if let Some(last) = segment.last() {
                let time_ms = last.time_ms;
                let consumed = segment.iter().filter(|e| !e.kind.is_command()).count();
                records.push(Record::Append {
                    run_id: run_id.clone(),
                    time_ms,
                    events: std::mem::take(segment),
                    consumed,
                });
            }
        };
        for event in events {
            if !event.kind.is_command() {
                flush(&mut segment, &mut records);
                records.push(Record::Inbox {
                    run_id: run_id.clone(),
                    time_ms: event.time_ms,
                    kind: event.kind.clone(),
                });
            }
            segment.push(event.clone());
        }
        if segment.len() > 1 {
            flush(&mut segment, &mut records);
        }
        records
    }
}

/// A run as the store keeps it.
#[derive(Clone, Debug)]
pub struct StoredRun {
    pub events: Vec<Event>,
    pub inbox: VecDeque<(Time, Kind)>,
    /// The run after its history *and* its inbox: what the store decides on.
    pub logical: RunState,
    /// Signal ids in the history (acknowledged).
    pub recorded_signals: BTreeSet<String>,
    /// Signal ids accepted but dropped because the run closed before reading them.
    pub rejected_signals: BTreeSet<String>,
    /// The run's id as the store's maps key on it.
    id: RunKey,
    /// Whether the run is in `Store::active` and in `Store::with_inbox`, and its entries in
    /// `Store::due`: kept with the run so that a refresh that changes none of them (most do not)
    /// searches no index.
    in_active: bool,
    in_with_inbox: bool,
    due: Vec<(Time, Due)>,
}

impl StoredRun {
    /// When the oldest inbox input that needs the workflow code arrived: from then on the run
    /// has a workflow task. Inputs that wake nothing (`Kind::wakes_workflow`) ride along with
    /// the next task instead of asking for one.
    pub fn waiting_since(&self) -> Option<Time> {
        self.inbox.iter().find(|(_, kind)| kind.wakes_workflow()).map(|(time, _)| *time)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub token: u64,
    pub worker: String,
    pub expires_at: Time,
    /// For activity leases: the attempt and when it started (for start-to-close).
    pub attempt: u32,
    pub started_at: Time,
}

/// A workflow task handed to a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowTask {
    pub run_id: String,
    pub token: u64,
    /// History length the completion must build on.
    pub base_len: u64,
    /// `history[from..base_len]`: everything when `from` is 0, or only what a sticky
    /// worker has not seen.
    pub from: u64,
    pub history: Vec<Event>,
    pub inbox: Vec<(Time, Kind)>,
}

/// A worker's answer to a workflow task.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowCompletion {
    pub run_id: String,
    pub token: u64,
    pub base_len: u64,
    /// New events: inbox inputs interleaved with the commands they caused.
    pub events: Vec<Event>,
    pub consumed: usize,
}

/// An activity attempt handed to a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityLease {
    pub task: ActivityTask,
    pub token: u64,
    pub expires_at: Time,
}

/// Whether a conditional write was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    Accepted,
    /// The write lost a race: stale token, expired lease, or the history moved on.
    Rejected(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalStatus {
    /// In the run's history: acknowledged.
    Recorded,
    /// Accepted, waiting for a workflow task to read it.
    Pending,
    /// The run closed before reading it.
    RunClosed,
    UnknownWorkflow,
}

/// Whose workflow-task polls could find a task (`Store::claim_workflow_task`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimants {
    /// Every waiting run's task is leased: no poll finds one.
    Nobody,
    /// Every claimable task is kept for this worker, which has its run cached (sticky): only
    /// its polls can find one.
    Only(Arc<str>),
    /// Any worker's poll may find one.
    Any,
}

/// Why an activity-task poll found nothing (`Store::claim_activity_task`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoAttempt {
    /// No unleased attempt is due: no poll finds one.
    NoneDue,
    /// Every due attempt's rate-limit key is one the poll left out.
    Blocked,
}

/// What happened during `tick`, for fault accounting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub activity_leases_expired: u32,
    pub workflow_leases_expired: u32,
}

#[derive(Clone, Debug)]
pub struct Store {
    config: Config,
    epoch: u32,
    token_count: u32,
    /// Every map and set below keys on a run's one `RunKey` (shared, so an index entry costs
    /// no allocation, and ordered as the id strings are, so iteration orders are those of the
    /// ids). Requests name runs by id: each looks its run up by string once, and its index
    /// work then goes by key, which leads to the run without a search.
    runs: Runs,
    /// workflow id -> its runs, first to latest.
    chains: BTreeMap<String, Vec<String>>,
    workflow_leases: BTreeMap<RunKey, Lease>,
    /// run id -> activity seq -> lease; iterates in (run id, seq) order.
    activity_leases: BTreeMap<RunKey, RunLeases>,
    /// run id -> (worker, history length it has cached).
    sticky: BTreeMap<RunKey, (Arc<str>, u64)>,
    /// Bumped by every change that could change what a poll finds, so hosts holding polls
    /// know when to look again.
    version: u64,
    /// Finer than `version`: bumped only when a workflow-task poll may find a task it could
    /// not find before (a run gained inputs that wake its code, lost its lease or its sticky
    /// worker). Writes that only take tasks away (a lease granted, inputs consumed, a run
    /// closed) or touch other things (an activity leased, a timer set) leave it alone.
    workflow_tasks_version: u64,
    /// Likewise for activity-task polls: bumped only when an unleased attempt enters `due`.
    activity_tasks_version: u64,
    /// Open runs with inputs waiting, open activities or open timers: the only runs polls,
    /// ticks and wake-ups look at, so runs idling on a signal cost nothing per operation.
    active: BTreeSet<RunKey>,
    /// The active runs with inputs in their inbox that wake the workflow code
    /// (`StoredRun::waiting_since`): the only runs a workflow-task poll can hand out, in the
    /// same (run id) order as `active`, so a poll under load does not look at every run that
    /// merely waits on an activity or a timer.
    with_inbox: BTreeSet<RunKey>,
    /// Everything that falls due with time, ordered by when: unleased activity attempts (when
    /// they may start), schedule-to-close deadlines, timers, and tasks kept for a sticky
    /// worker (when every worker may take them). Polls, ticks and wake-ups read it in time
    /// order instead of scanning runs. Each run keeps its own entries (`StoredRun::due`), so
    /// they can be replaced.
    due: BTreeSet<(Time, RunKey, Due)>,
    /// Reused by `refresh_active` to list a run's due entries, so a refresh that changes
    /// nothing allocates nothing.
    due_scratch: Vec<(Time, Due)>,
}

/// The activity leases of one run, by seq. A list, since a run has a lease per activity in
/// flight, usually one: it costs less to search and allocates less than a map of its own.
#[derive(Clone, Debug, Default)]
struct RunLeases(Vec<(u32, Lease)>);

impl RunLeases {
    fn get(&self, seq: u32) -> Option<&Lease> {
        self.0.iter().find(|(leased, _)| *leased == seq).map(|(_, lease)| lease)
    }

    fn get_mut(&mut self, seq: u32) -> Option<&mut Lease> {
        self.0.iter_mut().find(|(leased, _)| *leased == seq).map(|(_, lease)| lease)
    }

    /// Leases `seq`, replacing its lease if it has one; the list stays in seq order.
    fn insert(&mut self, seq: u32, lease: Lease) {
        match self.0.binary_search_by_key(&seq, |(leased, _)| *leased) {
            Ok(index) => self.0[index].1 = lease,
            Err(index) => self.0.insert(index, (seq, lease)),
        }
    }

    fn remove(&mut self, seq: u32) -> Option<Lease> {
        let index = self.0.iter().position(|(leased, _)| *leased == seq)?;
        Some(self.0.remove(index).1)
    }
}

/// The store's runs: a list in the order they started, found by key (`RunKey::slot`) without
/// a search, and by id through the keys in id order.
#[derive(Clone, Debug, Default)]
struct Runs {
    keys: BTreeSet<RunKey>,
    slots: Vec<StoredRun>,
}

impl Runs {
    fn key(&self, run_id: &str) -> Option<&RunKey> {
        self.keys.get(run_id)
    }

    fn get(&self, run_id: &str) -> Option<&StoredRun> {
        self.key(run_id).map(|key| &self.slots[key.slot()])
    }

    fn contains(&self, run_id: &str) -> bool {
        self.keys.contains(run_id)
    }

    /// Adds a run that is not there yet; its key is the one its `StoredRun::id` holds.
    fn insert(&mut self, run: StoredRun) {
        debug_assert_eq!(run.id.slot(), self.slots.len(), "a new run takes the next slot");
        self.keys.insert(run.id.clone());
        self.slots.push(run);
    }

    /// The key the next new run `run_id` gets.
    fn next_key(&self, run_id: &str) -> RunKey {
        RunKey::new(run_id, self.slots.len())
    }

    /// The runs in id order.
    fn in_id_order(&self) -> impl Iterator<Item = &StoredRun> {
        self.keys.iter().map(|key| &self.slots[key.slot()])
    }
}

impl std::ops::Index<&RunKey> for Runs {
    type Output = StoredRun;

    fn index(&self, key: &RunKey) -> &StoredRun {
        &self.slots[key.slot()]
    }
}

impl std::ops::IndexMut<&RunKey> for Runs {
    fn index_mut(&mut self, key: &RunKey) -> &mut StoredRun {
        &mut self.slots[key.slot()]
    }
}

impl std::ops::Index<&str> for Runs {
    type Output = StoredRun;

    fn index(&self, run_id: &str) -> &StoredRun {
        self.get(run_id).unwrap_or_else(|| panic!("unknown run {run_id}"))
    }
}

/// What falls due in `Store::due`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Activity(u32),
    Deadline(u32),
    Timer(u32),
    Sticky,
}

impl Store {
    pub fn new(config: Config) -> Store {
        Store {
            config,
            epoch: 0,
            token_count: 0,
            runs: Runs::default(),
            chains: BTreeMap::new(),
            workflow_leases: BTreeMap::new(),
            activity_leases: BTreeMap::new(),
            sticky: BTreeMap::new(),
            version: 0,
            workflow_tasks_version: 0,
            activity_tasks_version: 0,
            active: BTreeSet::new(),
            with_inbox: BTreeSet::new(),
            due: BTreeSet::new(),
            due_scratch: Vec::new(),
        }
    }

    /// Puts a run into, or takes it out of, the active set after its state changed.
    fn refresh_active(&mut self, run_id: &RunKey) {
        let run = &mut self.runs[run_id];
        let mut entries = std::mem::take(&mut self.due_scratch);
        entries.clear();
        let waiting_since = run.waiting_since();
        if !run.logical.is_closed() {
            // Looked up only for a run with open activities, and the sticky map only for one
            // with inputs waiting: most refreshes need neither.
            let mut leases = None;
            for (seq, activity) in run.logical.open_activities() {
                let leases = *leases.get_or_insert_with(|| self.activity_leases.get(run_id));
                if leases.is_none_or(|leases| leases.get(seq).is_none()) {
                    entries.push((activity.attempt_not_before, Due::Activity(seq)));
                }
                if let Some(deadline) = activity.deadline() {
                    entries.push((deadline, Due::Deadline(seq)));
                }
            }
            entries.extend(run.logical.open_timers().map(|(seq, timer)| (timer.fire_at, Due::Timer(seq))));
            if let Some(waiting_since) = waiting_since.filter(|_| self.sticky.contains_key(run_id)) {
                entries.push((waiting_since.plus(Duration::from_millis(self.config.sticky_ms)), Due::Sticky));
            }
        }
        let active = !run.logical.is_closed() && (!run.inbox.is_empty() || !entries.is_empty());
        if active != run.in_active {
            run.in_active = active;
            if active {
                self.active.insert(run.id.clone());
            } else {
                self.active.remove(run_id);
            }
        }
        let has_inbox = active && waiting_since.is_some();
        if has_inbox != run.in_with_inbox {
            run.in_with_inbox = has_inbox;
            if has_inbox {
                self.with_inbox.insert(run.id.clone());
                self.workflow_tasks_version += 1;
            } else {
                self.with_inbox.remove(run_id);
            }
        }
        // Most refreshes change nothing that falls due (an append that scheduled nothing, a
        // lease on a run with other open work): then the index already holds these entries.
        if run.due != entries {
            let old = &run.due;
            let new_attempt = entries.iter().any(|entry| matches!(entry.1, Due::Activity(_)) && !old.contains(entry));
            if new_attempt {
                self.activity_tasks_version += 1;
            }
            // Only what differs moves in the index: a lease or a fired timer usually changes one
            // entry of a few.
            for &(time, due) in old.iter().filter(|entry| !entries.contains(entry)) {
                self.due.remove(&(time, run.id.clone(), due));
            }
            for &(time, due) in entries.iter().filter(|entry| !old.contains(entry)) {
                self.due.insert((time, run.id.clone(), due));
            }
            // The run keeps the new list, and the old one's allocation becomes the scratch list.
            std::mem::swap(&mut run.due, &mut entries);
        }
        self.due_scratch = entries;
    }

    /// Takes an activity attempt's lease away, dropping the run's lease map once it is empty.
    fn remove_activity_lease(&mut self, run_id: &RunKey, seq: u32) -> Option<Lease> {
        let leases = self.activity_leases.get_mut(run_id)?;
        let lease = leases.remove(seq);
        if leases.0.is_empty() {
            self.activity_leases.remove(run_id);
        }
        lease
    }

    /// Changes whenever what a poll would find may have changed (besides time passing).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Changes whenever a workflow-task poll may find a task it could not find before (besides
    /// time passing): a host holding polls that found nothing need not ask again while it
    /// stays the same.
    pub fn workflow_tasks_version(&self) -> u64 {
        self.workflow_tasks_version
    }

    /// Changes whenever an activity-task poll may find an attempt it could not find before
    /// (besides time passing).
    pub fn activity_tasks_version(&self) -> u64 {
        self.activity_tasks_version
    }

    /// Rebuilds the store from its durable records and opens a new epoch; the returned
    /// record must be made durable like any other.
    pub fn recover<R: std::borrow::Borrow<Record>>(
        config: Config,
        records: impl IntoIterator<Item = R>,
    ) -> (Store, Record) {
        let mut store = Store::new(config);
        for record in records {
            store.apply(record.borrow());
        }
        let epoch = Record::Epoch { epoch: store.epoch + 1 };
        store.apply(&epoch);
        (store, epoch)
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The history of every run that has one, in run id order.
    pub fn histories(&self) -> Vec<History> {
        let runs = self.runs.in_id_order();
        runs.filter(|run| !run.events.is_empty()).map(|run| History::new(run.events.clone())).collect()
    }

    /// `histories`, moved out of the store: a host done with its store hands them on without
    /// copying a single event.
    pub fn into_histories(self) -> Vec<History> {
        let Runs { keys, mut slots } = self.runs;
        let events = keys.iter().map(|key| std::mem::take(&mut slots[key.slot()].events));
        events.filter(|events| !events.is_empty()).map(History::new).collect()
    }

    pub fn run(&self, run_id: &str) -> Option<&StoredRun> {
        self.runs.get(run_id)
    }

    /// Runs of a workflow id, first to latest.
    pub fn chain(&self, workflow_id: &str) -> &[String] {
        self.chains.get(workflow_id).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn workflow_ids(&self) -> impl Iterator<Item = &str> {
        self.chains.keys().map(String::as_str)
    }

    pub fn latest_run(&self, workflow_id: &str) -> Option<&str> {
        self.chains.get(workflow_id).and_then(|c| c.last()).map(String::as_str)
    }

    pub fn activity_lease(&self, run_id: &str, seq: u32) -> Option<&Lease> {
        self.activity_leases.get(run_id)?.get(seq)
    }

    fn next_token(&mut self) -> u64 {
        self.version += 1;
        self.token_count += 1;
        (u64::from(self.epoch) << 32) | u64::from(self.token_count)
    }

    // ---- writes -------------------------------------------------------------------------

    /// Starts a run, or returns the existing one for this workflow id.
    pub fn start(&mut self, now: Time, workflow_id: &str, workflow_type: &str, input: Value) -> (String, Vec<Record>) {
        if let Some(run_id) = self.latest_run(workflow_id) {
            return (run_id.to_owned(), Vec::new());
        }
        let run_id = crate::engine::first_run_id(workflow_id);
        let kind = Kind::WorkflowStarted {
            workflow_type: workflow_type.to_owned(),
            workflow_id: workflow_id.to_owned(),
            run_id: run_id.clone(),
            input: input.into(),
            parent: None,
            continued_from: None,
        };
        let record = Record::Inbox { run_id: run_id.clone(), time_ms: now, kind };
        self.apply(&record);
        (run_id, vec![record])
    }

    /// Accepts a signal for the latest run of `workflow_id`, once per signal id.
    pub fn signal(
        &mut self,
        now: Time,
        workflow_id: &str,
        signal_id: &str,
        name: &str,
        payload: Value,
    ) -> (SignalStatus, Vec<Record>) {
        let status = self.signal_status(workflow_id, signal_id);
        if status != SignalStatus::RunClosed || self.signal_seen(workflow_id, signal_id) {
            return (status, Vec::new());
        }
        let Some(run_id) = self.latest_run(workflow_id).map(str::to_owned) else {
            return (SignalStatus::UnknownWorkflow, Vec::new());
        };
        let Some(kind) = self.runs[run_id.as_str()].logical.signal(signal_id, name, payload.into()) else {
            return (SignalStatus::RunClosed, Vec::new());
        };
        let record = Record::Inbox { run_id, time_ms: now, kind };
        self.apply(&record);
        (SignalStatus::Pending, vec![record])
    }

    fn signal_seen(&self, workflow_id: &str, signal_id: &str) -> bool {
        self.chain(workflow_id).iter().any(|run_id| self.runs[run_id.as_str()].rejected_signals.contains(signal_id))
    }

    /// Where a signal stands; a client retrying a signal asks this.
    pub fn signal_status(&self, workflow_id: &str, signal_id: &str) -> SignalStatus {
        let chain = self.chain(workflow_id);
        if chain.is_empty() {
            return SignalStatus::UnknownWorkflow;
        }
        for run_id in chain {
            let run = &self.runs[run_id.as_str()];
            if run.recorded_signals.contains(signal_id) {
                return SignalStatus::Recorded;
            }
            if run.logical.signal_ids.contains(signal_id) && !run.rejected_signals.contains(signal_id) {
                return SignalStatus::Pending;
            }
        }
        SignalStatus::RunClosed
    }

    /// Asks the latest run of `workflow_id` to cancel; `false` if there is nothing to cancel.
    pub fn cancel(&mut self, now: Time, workflow_id: &str, reason: &str) -> (bool, Vec<Record>) {
        let Some(run_id) = self.latest_run(workflow_id).map(str::to_owned) else {
            return (false, Vec::new());
        };
        let Some(kind) = self.runs[run_id.as_str()].logical.cancel(reason) else {
            return (false, Vec::new());
        };
        let record = Record::Inbox { run_id, time_ms: now, kind };
        self.apply(&record);
        (true, vec![record])
    }

    /// The run whose workflow task a poll by `worker` would claim now; if there is none, whose
    /// polls could claim one, learnt in the same pass over the waiting runs.
    fn claimable_workflow_run(&self, now: Time, worker: &str) -> Result<RunKey, Claimants> {
        // The one worker every unleased waiting run seen so far is kept for, or `Err` once two
        // runs are kept for different workers.
        let mut kept_for_one: Result<Option<&Arc<str>>, ()> = Ok(None);
        for run_id in &self.with_inbox {
            let Some(waiting_since) = self.runs[run_id].waiting_since() else { continue };
            if self.workflow_leases.get(run_id).is_some_and(|l| l.expires_at > now) {
                continue;
            }
            match self.sticky.get(run_id) {
                Some((kept_for, _))
                    if **kept_for != *worker
                        && now < waiting_since.plus(Duration::from_millis(self.config.sticky_ms)) =>
                {
                    kept_for_one = match kept_for_one {
                        Ok(None) => Ok(Some(kept_for)),
                        Ok(Some(one)) if one == kept_for => Ok(Some(one)),
                        _ => Err(()),
                    };
                }
                _ => return Ok(run_id.clone()),
            }
        }
        Err(match kept_for_one {
            Ok(None) => Claimants::Nobody,
            Ok(Some(one)) => Claimants::Only(one.clone()),
            Err(()) => Claimants::Any,
        })
    }

    /// Whether a workflow-task poll by `worker` would find a task now; claims nothing.
    pub fn has_workflow_task(&self, now: Time, worker: &str) -> bool {
        self.claimable_workflow_run(now, worker).is_ok()
    }

    /// Claims the next workflow task for `worker`, if any run has inputs waiting.
    pub fn poll_workflow_task(&mut self, now: Time, worker: &str) -> Option<WorkflowTask> {
        self.claim_workflow_task(now, worker).ok()
    }

    /// `poll_workflow_task`, which when it finds nothing also says whose polls could find a task
    /// now: a host holding several polls then need not ask for the others. Claiming a task only
    /// takes tasks away, so the answer stays true (if less precise) while the host claims
    /// tasks at the same `now`.
    pub fn claim_workflow_task(&mut self, now: Time, worker: &str) -> Result<WorkflowTask, Claimants> {
        let run_id = self.claimable_workflow_run(now, worker)?;
        let token = self.next_token();
        let expires_at = now.plus(Duration::from_millis(self.config.workflow_lease_ms));
        self.workflow_leases.insert(
            run_id.clone(),
            Lease { token, worker: worker.to_owned(), expires_at, attempt: 0, started_at: now },
        );
        let run = &self.runs[&run_id];
        let base_len = run.events.len() as u64;
        let from = match self.sticky.get(&run_id) {
            Some((sticky_worker, len)) if **sticky_worker == *worker && *len <= base_len => *len,
            _ => 0,
        };
        Ok(WorkflowTask {
            run_id: run_id.as_str().to_owned(),
            token,
            base_len,
            from,
            history: run.events[from as usize..].to_vec(),
            inbox: run.inbox.iter().cloned().collect(),
        })
    }

    /// Takes back a workflow task the worker could not complete (e.g. its cache missed a
    /// sticky delta); the next poll hands out the full history.
    pub fn abandon_workflow_task(&mut self, run_id: &str, token: u64) -> Ack {
        let run_id = match self.workflow_leases.get_key_value(run_id) {
            Some((key, lease)) if lease.token == token => key.clone(),
            _ => return Ack::Rejected(format!("run {run_id}: token {token:#x} is not the current workflow task")),
        };
        self.workflow_leases.remove(&run_id);
        self.sticky.remove(&run_id);
        self.version += 1;
        self.workflow_tasks_version += 1;
        self.refresh_active(&run_id);
        Ack::Accepted
    }

    /// Conditional append of a completed workflow task.
    pub fn complete_workflow_task(
        &mut self,
        now: Time,
        worker: &str,
        completion: WorkflowCompletion,
    ) -> (Ack, Vec<Record>) {
        let WorkflowCompletion { run_id, token, base_len, events, consumed } = completion;
        let key = match self.workflow_leases.get_key_value(run_id.as_str()) {
            Some((key, lease)) if lease.token == token && lease.expires_at > now => key.clone(),
            Some((_, lease)) if lease.token == token => {
                return (
                    Ack::Rejected(format!("run {run_id}: workflow task lease expired at {}", lease.expires_at)),
                    Vec::new(),
                );
            }
            _ => {
                return (
                    Ack::Rejected(format!("run {run_id}: token {token:#x} is not the current workflow task")),
                    Vec::new(),
                )
            }
        };
        let run = &self.runs[&key];
        if run.events.len() as u64 != base_len {
            return (
                Ack::Rejected(format!(
                    "run {run_id}: history has {} events, completion expects {base_len}",
                    run.events.len()
                )),
                Vec::new(),
            );
        }
        if let Err(detail) = check_completion(run, base_len, &events, consumed) {
            return (Ack::Rejected(format!("run {run_id}: {detail}")), Vec::new());
        }
        self.workflow_leases.remove(&key);
        let len = base_len + events.len() as u64;
        // Kept for this worker before the append, whose refresh of the run then sees it. Usually
        // it was kept for this worker already, whose name then needs no new allocation.
        match self.sticky.entry(key.clone()) {
            Entry::Occupied(mut kept) => {
                let (kept_for, kept_len) = kept.get_mut();
                if **kept_for != *worker {
                    *kept_for = Arc::from(worker);
                }
                *kept_len = len;
            }
            Entry::Vacant(free) => {
                free.insert((Arc::from(worker), len));
            }
        }
        let record = Record::Append { run_id, time_ms: now, events, consumed };
        self.apply_written(&key, &record);
        if self.with_inbox.contains(&key) {
            // Inputs arrived while the task ran: the run is free again, now for this worker.
            self.workflow_tasks_version += 1;
        }
        (Ack::Accepted, vec![record])
    }

    /// The activity attempt an activity-task poll would claim now, or why there is none.
    fn due_activity_attempt(&self, now: Time, blocked_keys: &BTreeSet<String>) -> Result<(&RunKey, u32), NoAttempt> {
        let mut none = NoAttempt::NoneDue;
        for (_, run_id, due) in self.due.iter().take_while(|(time, _, _)| *time <= now) {
            let Due::Activity(seq) = *due else { continue };
            let activity = &self.runs[run_id].logical.activities[&seq];
            if activity.options.rate_limit_key.as_ref().is_some_and(|k| blocked_keys.contains(k)) {
                none = NoAttempt::Blocked;
            } else {
                return Ok((run_id, seq));
            }
        }
        Err(none)
    }

    /// Whether an activity-task poll would find an attempt now; claims nothing.
    pub fn has_activity_task(&self, now: Time, blocked_keys: &BTreeSet<String>) -> bool {
        self.due_activity_attempt(now, blocked_keys).is_ok()
    }

    /// Claims the next due activity attempt whose rate-limit key is not in `blocked_keys`.
    pub fn poll_activity_task(
        &mut self,
        now: Time,
        worker: &str,
        blocked_keys: &BTreeSet<String>,
    ) -> Option<ActivityLease> {
        self.claim_activity_task(now, worker, blocked_keys).ok()
    }

    /// `poll_activity_task`, which when it finds nothing also says why: with no attempt due, no
    /// poll finds one until the store changes or time passes (claims only take attempts away).
    pub fn claim_activity_task(
        &mut self,
        now: Time,
        worker: &str,
        blocked_keys: &BTreeSet<String>,
    ) -> Result<ActivityLease, NoAttempt> {
        let (run_id, seq) = self.due_activity_attempt(now, blocked_keys).map(|(run_id, seq)| (run_id.clone(), seq))?;
        let token = self.next_token();
        let run = &self.runs[&run_id];
        let activity = &run.logical.activities[&seq];
        let lease_ms = match activity.options.start_to_close_ms {
            Some(stc) => stc.min(self.config.activity_lease_ms),
            None => self.config.activity_lease_ms,
        };
        let expires_at = now.plus(Duration::from_millis(lease_ms));
        let task = ActivityTask {
            workflow_id: run.logical.workflow_id.clone(),
            run_id: run_id.as_str().to_owned(),
            seq,
            attempt: activity.attempt,
            activity_type: activity.activity_type.clone(),
            input: activity.input.clone(),
            idempotency_key: activity.idempotency_key.clone(),
            not_before: activity.attempt_not_before,
            options: activity.options.clone(),
            previous_failure: activity.last_failure.clone(),
        };
        let attempt = activity.attempt;
        self.activity_leases
            .entry(run_id.clone())
            .or_default()
            .insert(seq, Lease { token, worker: worker.to_owned(), expires_at, attempt, started_at: now });
        self.refresh_active(&run_id);
        Ok(ActivityLease { task, token, expires_at })
    }

    /// The lease of a report or heartbeat, with its run's key, if `token` still holds it.
    fn check_activity_lease(&self, now: Time, run_id: &str, seq: u32, token: u64) -> Result<(&RunKey, &Lease), Ack> {
        let leased = self.activity_leases.get_key_value(run_id).and_then(|(key, leases)| Some((key, leases.get(seq)?)));
        match leased {
            Some((key, lease)) if lease.token == token && lease.expires_at > now => Ok((key, lease)),
            Some((_, lease)) if lease.token == token => {
                Err(Ack::Rejected(format!("activity {run_id}:{seq}: lease expired at {}", lease.expires_at)))
            }
            _ => Err(Ack::Rejected(format!("activity {run_id}:{seq}: token {token:#x} is not the current lease"))),
        }
    }

    /// Extends an activity lease; `Rejected` tells the worker to give the attempt up.
    pub fn heartbeat(&mut self, now: Time, run_id: &str, seq: u32, token: u64) -> Ack {
        let lease_ms = self.config.activity_lease_ms;
        let (run_id, deadline) = {
            let (run_id, lease) = match self.check_activity_lease(now, run_id, seq, token) {
                Ok(leased) => leased,
                Err(ack) => return ack,
            };
            let stc = self.runs[run_id].logical.activities[&seq].options.start_to_close_ms;
            (run_id.clone(), stc.map(|ms| lease.started_at.plus(Duration::from_millis(ms))))
        };
        let lease =
            self.activity_leases.get_mut(&run_id).and_then(|leases| leases.get_mut(seq)).expect("checked above");
        let extended = now.plus(Duration::from_millis(lease_ms));
        lease.expires_at = deadline.map_or(extended, |d| extended.min(d));
        Ack::Accepted
    }

    /// Reports the end of an activity attempt; conditional on the current fencing token.
    pub fn complete_activity_task(
        &mut self,
        now: Time,
        run_id: &str,
        seq: u32,
        token: u64,
        report: AttemptReport,
        worker: &str,
    ) -> (Ack, Vec<Record>) {
        let (key, attempt) = match self.check_activity_lease(now, run_id, seq, token) {
            Ok((key, lease)) => (key.clone(), lease.attempt),
            Err(ack) => return (ack, Vec::new()),
        };
        self.remove_activity_lease(&key, seq);
        self.version += 1;
        let Some(kind) = self.runs[&key].logical.activity_report(now, seq, attempt, report, Some(worker.to_owned()))
        else {
            // Nothing reaches the run, so its indexes learn here that the lease is gone; an
            // accepted report refreshes them when it enters the inbox.
            self.refresh_active(&key);
            return (
                Ack::Rejected(format!("activity {run_id}:{seq}: attempt {attempt} is no longer current")),
                Vec::new(),
            );
        };
        let record = Record::Inbox { run_id: run_id.to_owned(), time_ms: now, kind };
        self.apply_written(&key, &record);
        (Ack::Accepted, vec![record])
    }

    /// Expires leases and fires due timers and deadlines.
    pub fn tick(&mut self, now: Time) -> (TickReport, Vec<Record>) {
        self.version += 1;
        let mut report = TickReport::default();
        let mut records = Vec::new();
        let expired: Vec<(RunKey, u32)> = self
            .activity_leases
            .iter()
            .flat_map(|(run_id, leases)| leases.0.iter().map(move |(seq, lease)| (run_id, *seq, lease)))
            .filter(|(_, _, lease)| lease.expires_at <= now)
            .map(|(run_id, seq, _)| (run_id.clone(), seq))
            .collect();
        for (run_id, seq) in expired {
            let lease = self.remove_activity_lease(&run_id, seq).expect("listed above");
            self.refresh_active(&run_id);
            report.activity_leases_expired += 1;
            let failure = AttemptReport::Failed { failure: Failure::TimedOut };
            if let Some(kind) =
                self.runs[&run_id].logical.activity_report(now, seq, lease.attempt, failure, Some(lease.worker))
            {
                records.push(Record::Inbox { run_id: run_id.as_str().to_owned(), time_ms: now, kind });
            }
        }
        let expired_workflow_leases = self.workflow_leases.iter().filter(|(_, l)| l.expires_at <= now).count();
        self.workflow_leases.retain(|_, l| l.expires_at > now);
        report.workflow_leases_expired = u32::try_from(expired_workflow_leases).unwrap_or(u32::MAX);
        if expired_workflow_leases > 0 {
            self.workflow_tasks_version += 1;
        }
        for (_, run_id, due) in self.due.iter().take_while(|(time, _, _)| *time <= now) {
            let run = &self.runs[run_id];
            let kind = match *due {
                Due::Timer(seq) => run.logical.timer_fired(seq),
                Due::Deadline(seq) => run.logical.activity_deadline_passed(seq),
                Due::Activity(_) | Due::Sticky => None,
            };
            if let Some(kind) = kind {
                records.push(Record::Inbox { run_id: run_id.as_str().to_owned(), time_ms: now, kind });
            }
        }
        for record in &records {
            self.apply(record);
        }
        (report, records)
    }

    /// The earliest time after `now` at which `tick` has something to do, or a poll may be
    /// answered differently (a retry falling due, a sticky run opening up to every worker).
    pub fn next_wakeup(&self, now: Time) -> Option<Time> {
        let leases = self.activity_leases.values().flat_map(|leases| leases.0.iter().map(|(_, lease)| lease));
        let leases = leases.chain(self.workflow_leases.values());
        let leases = leases.map(|l| l.expires_at);
        let due = self.due.iter().map(|(time, _, _)| *time).find(|time| *time > now);
        leases.chain(due).min()
    }

    // ---- applying records ---------------------------------------------------------------

    /// Applies one durable record: the only way the store's durable state changes.
    pub fn apply(&mut self, record: &Record) {
        self.version += 1;
        match record {
            Record::Epoch { epoch } => {
                assert!(*epoch > self.epoch, "epoch {epoch} does not follow {}", self.epoch);
                self.epoch = *epoch;
                self.token_count = 0;
                self.workflow_leases.clear();
                self.activity_leases.clear();
                self.sticky.clear();
                self.workflow_tasks_version += 1;
                self.activity_tasks_version += 1;
                // Unleased attempts are due again, and no task is kept for a sticky worker.
                let active: Vec<RunKey> = self.active.iter().cloned().collect();
                for run_id in active {
                    self.refresh_active(&run_id);
                }
            }
            Record::Inbox { run_id, time_ms, kind } => self.push_inbox(run_id, *time_ms, kind.clone()),
            Record::Append { run_id, time_ms, events, consumed } => {
                let run_id = self.key(run_id).unwrap_or_else(|| panic!("append to unknown run {run_id}"));
                self.append(&run_id, *time_ms, events, *consumed)
            }
        }
    }

    /// `apply` of a record this store has just written for the run of `key`: the same change,
    /// without looking the run up by id again. Never a run's start, which creates the run.
    fn apply_written(&mut self, key: &RunKey, record: &Record) {
        self.version += 1;
        match record {
            Record::Inbox { time_ms, kind, .. } => {
                debug_assert!(!matches!(kind, Kind::WorkflowStarted { .. }), "a start creates its run through apply");
                self.push_inbox_to(key, *time_ms, kind.clone());
            }
            Record::Append { time_ms, events, consumed, .. } => self.append(key, *time_ms, events, *consumed),
            Record::Epoch { .. } => unreachable!("an epoch record belongs to no run"),
        }
    }

    /// The key of a run the store knows, found by its id.
    fn key(&self, run_id: &str) -> Option<RunKey> {
        self.runs.key(run_id).cloned()
    }

    /// Accepts an input for the run `run_id` names, creating the run if the input starts it.
    fn push_inbox(&mut self, run_id: &str, time: Time, kind: Kind) {
        let run_id = if let Kind::WorkflowStarted { workflow_id, .. } = &kind {
            assert!(!self.runs.contains(run_id), "run {run_id} started twice");
            self.chains.entry(workflow_id.clone()).or_default().push(run_id.to_owned());
            let id = self.runs.next_key(run_id);
            self.runs.insert(StoredRun {
                events: Vec::new(),
                inbox: VecDeque::new(),
                logical: RunState::default(),
                recorded_signals: BTreeSet::new(),
                rejected_signals: BTreeSet::new(),
                id: id.clone(),
                in_active: false,
                in_with_inbox: false,
                due: Vec::new(),
            });
            id
        } else {
            self.key(run_id).unwrap_or_else(|| panic!("inbox record for unknown run {run_id}"))
        };
        self.push_inbox_to(&run_id, time, kind);
    }

    fn push_inbox_to(&mut self, run_id: &RunKey, time: Time, kind: Kind) {
        let run = &mut self.runs[run_id];
        if let Err(detail) = run.logical.accept(time, &kind) {
            // The message names the invariant, so a simulator reports it as that check.
            panic!(
                "check_histories_well_formed: run {run_id}: inbox input {} rejected by the run state: {detail}",
                kind.name()
            );
        }
        let cancel_reason = match &kind {
            Kind::CancelRequested { reason } => Some(reason.clone()),
            _ => None,
        };
        run.inbox.push_back((time, kind));
        self.refresh_active(run_id);
        if let Some(reason) = cancel_reason {
            // Cancellation reaches child runs; each reports back as `child_completed`.
            let children: Vec<String> =
                self.runs[run_id].logical.open_children().map(|(_, c)| c.workflow_id.clone()).collect();
            for child_id in children {
                let Some(child_run) = self.latest_run(&child_id).map(str::to_owned) else {
                    continue;
                };
                if let Some(kind) = self.runs[child_run.as_str()].logical.cancel(&reason) {
                    self.push_inbox(&child_run, time, kind);
                }
            }
        }
    }

    fn append(&mut self, run_id: &RunKey, time: Time, events: &[Event], consumed: usize) {
        let run = &mut self.runs[run_id];
        assert!(
            consumed <= run.inbox.len(),
            "check_histories_well_formed: run {run_id}: append consumes {consumed} of {} inbox inputs",
            run.inbox.len()
        );
        run.inbox.drain(..consumed);
        let mut follow_ups = Vec::new();
        for event in events {
            assert_eq!(
                event.index,
                run.events.len() as u64,
                "check_histories_well_formed: run {run_id}: append out of place"
            );
            if let Kind::SignalReceived { signal_id, .. } = &event.kind {
                run.recorded_signals.insert(signal_id.clone());
            }
            if event.kind.is_command() {
                if let Err(detail) = run.logical.accept(event.time_ms, &event.kind) {
                    let check = if event.kind.is_terminal() && run.logical.is_closed() {
                        "check_runs_complete_exactly_once"
                    } else {
                        "check_histories_well_formed"
                    };
                    panic!("{check}: run {run_id}: command {event} rejected by the run state: {detail}");
                }
                if matches!(event.kind, Kind::ChildStarted { .. }) || event.kind.is_terminal() {
                    follow_ups.push(event.kind.clone());
                }
            }
            run.events.push(event.clone());
        }
        for kind in follow_ups {
            match kind {
                Kind::ChildStarted { seq, workflow_type, workflow_id, input } => {
                    let parent = Parent {
                        workflow_id: self.runs[run_id].logical.workflow_id.clone(),
                        run_id: run_id.as_str().to_owned(),
                        seq,
                    };
                    if self.chains.contains_key(&workflow_id) {
                        let error = format!("workflow id {workflow_id} is already in use");
                        if let Some(kind) = self.runs[run_id].logical.child_closed(seq, ChildOutcome::Failed { error })
                        {
                            self.push_inbox_to(run_id, time, kind);
                        }
                        continue;
                    }
                    let child_run_id = crate::engine::first_run_id(&workflow_id);
                    let started = Kind::WorkflowStarted {
                        workflow_type,
                        workflow_id,
                        run_id: child_run_id.clone(),
                        input,
                        parent: Some(parent),
                        continued_from: None,
                    };
                    self.push_inbox(&child_run_id, time, started);
                }
                terminal => self.close(run_id, time, terminal),
            }
        }
        self.refresh_active(run_id);
    }

    fn close(&mut self, run_id: &RunKey, time: Time, terminal: Kind) {
        self.workflow_leases.remove(run_id);
        let run = &mut self.runs[run_id];
        let leftovers: Vec<(Time, Kind)> = run.inbox.drain(..).collect();
        let (workflow_id, workflow_type, parent) =
            (run.logical.workflow_id.clone(), run.logical.workflow_type.clone(), run.logical.parent.clone());
        let outcome = match terminal {
            Kind::WorkflowContinuedAsNew { input, next_run_id } => {
                let started = Kind::WorkflowStarted {
                    workflow_type,
                    workflow_id,
                    run_id: next_run_id.clone(),
                    input,
                    parent,
                    continued_from: Some(run_id.as_str().to_owned()),
                };
                self.push_inbox(&next_run_id, time, started);
                // Signals the old run never read belong to the workflow, so they move on.
                for (_, kind) in leftovers {
                    if let Kind::SignalReceived { signal_id, name, payload } = kind {
                        if let Some(kind) = self.runs[next_run_id.as_str()].logical.signal(&signal_id, &name, payload) {
                            self.push_inbox(&next_run_id, time, kind);
                        }
                    }
                }
                return;
            }
            Kind::WorkflowCompleted { output } => ChildOutcome::Completed { output },
            Kind::WorkflowFailed { error } => ChildOutcome::Failed { error },
            Kind::WorkflowCanceled => ChildOutcome::Canceled,
            other => panic!("run {run_id}: {} is not terminal", other.name()),
        };
        let run = &mut self.runs[run_id];
        for (_, kind) in leftovers {
            if let Kind::SignalReceived { signal_id, .. } = kind {
                run.rejected_signals.insert(signal_id);
            }
        }
        if let Some(parent) = parent {
            let notify =
                self.runs.get(parent.run_id.as_str()).and_then(|p| p.logical.child_closed(parent.seq, outcome));
            if let Some(kind) = notify {
                self.push_inbox(&parent.run_id, time, kind);
            }
        }
    }

    /// Whether the run is closed (completed, failed, canceled or continued).
    pub fn status(&self, run_id: &str) -> Option<Status> {
        self.runs.get(run_id).map(|r| r.logical.status)
    }
}

/// Checks that a completion moves exactly the first `consumed` inbox inputs into the history,
/// in order, and numbers its events from `base_len`.
fn check_completion(run: &StoredRun, base_len: u64, events: &[Event], consumed: usize) -> Result<(), String> {
    if consumed > run.inbox.len() {
        return Err(format!("consumes {consumed} inputs but the inbox has {}", run.inbox.len()));
    }
    let mut inputs = run.inbox.iter().take(consumed);
    for (offset, event) in events.iter().enumerate() {
        if event.index != base_len + offset as u64 {
            return Err(format!("event index {} where {} was expected", event.index, base_len + offset as u64));
        }
        if event.kind.is_command() {
            continue;
        }
        match inputs.next() {
            Some((time, kind)) if *time == event.time_ms && *kind == event.kind => {}
            _ => return Err(format!("input event {} is not the next inbox input", event.index)),
        }
    }
    if inputs.next().is_some() {
        return Err("fewer input events than consumed".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::Options;
    use serde_json::json;

    const T0: Time = Time(1_000);

    fn versions(store: &Store) -> (u64, u64) {
        (store.workflow_tasks_version(), store.activity_tasks_version())
    }

    /// Starts one run and completes its first workflow task by scheduling activity 1.
    fn run_waiting_on_an_activity(store: &mut Store) -> String {
        let (run_id, _) = store.start(T0, "wf", "steps", json!({}));
        let task = store.poll_workflow_task(T0, "w1").expect("the start is a workflow task");
        let scheduled = Kind::ActivityScheduled {
            seq: 1,
            activity_type: "step".to_owned(),
            input: json!({}).into(),
            idempotency_key: "wf:1".to_owned(),
            options: Options::default(),
        };
        let events = vec![
            Event { index: 0, time_ms: task.inbox[0].0, kind: task.inbox[0].1.clone() },
            Event { index: 1, time_ms: T0, kind: scheduled },
        ];
        let completion =
            WorkflowCompletion { run_id: run_id.clone(), token: task.token, base_len: 0, events, consumed: 1 };
        assert_eq!(store.complete_workflow_task(T0, "w1", completion).0, Ack::Accepted);
        run_id
    }

    #[test]
    fn each_poll_kind_has_a_version_that_moves_only_when_it_could_find_more() {
        let mut store = Store::new(Config::default());
        let before_start = versions(&store);
        let (run_id, _) = store.start(T0, "wf", "steps", json!({}));
        let started = versions(&store);
        assert!(started.0 > before_start.0, "a new run with an input waiting is a workflow task");
        assert_eq!(started.1, before_start.1, "starting a run schedules no activity");
        assert!(store.has_workflow_task(T0, "w1"));

        let task = store.poll_workflow_task(T0, "w1").expect("the start is a workflow task");
        assert_eq!(versions(&store), started, "a lease only takes a task away");
        assert!(!store.has_workflow_task(T0, "w2"));
        store.abandon_workflow_task(&run_id, task.token);
        assert!(versions(&store).0 > started.0, "an abandoned task is there again");
        assert!(store.has_workflow_task(T0, "w2"));

        let mut store = Store::new(Config::default());
        let fresh = versions(&store);
        let run_id = run_waiting_on_an_activity(&mut store);
        let no_blocked_keys = BTreeSet::new();
        assert!(store.has_activity_task(T0, &no_blocked_keys));
        assert!(!store.has_workflow_task(T0, "w1"), "the inbox was consumed");
        let scheduled = versions(&store);
        assert!(scheduled.1 > fresh.1, "the scheduled activity's first attempt is due");

        let lease = store.poll_activity_task(T0, "w1", &no_blocked_keys).expect("activity 1 is due");
        let leased = versions(&store);
        assert_eq!(leased, scheduled, "a lease only takes an attempt away");
        assert!(!store.has_activity_task(T0, &no_blocked_keys));

        assert_eq!(store.heartbeat(T0, &run_id, 1, lease.token), Ack::Accepted);
        assert_eq!(versions(&store), leased, "a heartbeat changes what no poll finds");

        let report = AttemptReport::Completed { output: json!("done").into() };
        let (ack, _) = store.complete_activity_task(T0, &run_id, 1, lease.token, report, "w1");
        assert_eq!(ack, Ack::Accepted);
        let reported = versions(&store);
        assert!(reported.0 > leased.0, "the report is an input waiting for a workflow task");
        assert_eq!(reported.1, leased.1, "a completed activity has no attempt left to find");
        assert!(store.has_workflow_task(T0, "w1"));
    }

    #[test]
    fn a_poll_that_finds_nothing_names_whose_polls_could_find_something() {
        let mut store = Store::new(Config::default());
        let run_id = run_waiting_on_an_activity(&mut store);
        let no_blocked_keys = BTreeSet::new();
        assert_eq!(store.claim_workflow_task(T0, "w2").err(), Some(Claimants::Nobody), "no input waits");
        let lease = store.claim_activity_task(T0, "w1", &no_blocked_keys).expect("activity 1 is due");
        let next = store.claim_activity_task(T0, "w2", &no_blocked_keys);
        assert_eq!(next.err(), Some(NoAttempt::NoneDue));

        let report = AttemptReport::Completed { output: json!("done").into() };
        let (ack, _) = store.complete_activity_task(T0, &run_id, 1, lease.token, report, "w1");
        assert_eq!(ack, Ack::Accepted);
        let kept = store.claim_workflow_task(T0, "w2").err();
        assert_eq!(kept, Some(Claimants::Only(Arc::from("w1"))), "the task is kept for the worker that has the run");
        assert!(!store.has_workflow_task(T0, "w3"));
        store.claim_workflow_task(T0, "w1").expect("the sticky worker claims its task");
        assert_eq!(store.claim_workflow_task(T0, "w2").err(), Some(Claimants::Nobody), "the task is leased");

        let sticky_over = T0.plus(Duration::from_millis(Config::default().sticky_ms));
        let mut store = Store::new(Config::default());
        let run_id = run_waiting_on_an_activity(&mut store);
        let lease = store.claim_activity_task(T0, "w1", &no_blocked_keys).expect("activity 1 is due");
        let report = AttemptReport::Completed { output: json!("done").into() };
        let (ack, _) = store.complete_activity_task(T0, &run_id, 1, lease.token, report, "w1");
        assert_eq!(ack, Ack::Accepted);
        assert!(store.has_workflow_task(sticky_over, "w2"), "once the sticky time is over any worker may take it");
    }

    #[test]
    fn into_histories_hands_over_every_started_history_as_stored() {
        let mut store = Store::new(Config::default());
        let run_id = run_waiting_on_an_activity(&mut store);
        store.start(T0, "waiting", "steps", json!({}));
        let stored = store.run(&run_id).expect("started").events.clone();
        let histories = store.into_histories();
        assert_eq!(histories.len(), 1, "a run whose start is still in its inbox has no history yet");
        assert_eq!((histories[0].run_id.as_str(), &histories[0].events), (run_id.as_str(), &stored));
    }

    #[test]
    fn next_wakeup_is_the_first_entry_after_now_or_an_earlier_lease_expiry() {
        let mut store = Store::new(Config::default());
        run_waiting_on_an_activity(&mut store);
        let before = Time(T0.0 - 1);
        assert_eq!(store.next_wakeup(before), Some(T0), "the first attempt falls due at T0");
        assert_eq!(store.next_wakeup(T0), None, "an attempt already due wakes nothing later");
        let lease = store.poll_activity_task(T0, "w1", &BTreeSet::new()).expect("activity 1 is due");
        assert_eq!(store.next_wakeup(T0), Some(lease.expires_at));
        assert_eq!(store.next_wakeup(lease.expires_at), Some(lease.expires_at), "a lease counts until it expires");
    }

    #[test]
    fn an_activity_poll_that_leaves_out_every_due_key_says_so() {
        let mut store = Store::new(Config::default());
        let (run_id, _) = store.start(T0, "wf", "steps", json!({}));
        let task = store.poll_workflow_task(T0, "w1").expect("the start is a workflow task");
        let options = Options { rate_limit_key: Some("llm:model".to_owned()), ..Options::default() };
        let scheduled = Kind::ActivityScheduled {
            seq: 1,
            activity_type: "ask".to_owned(),
            input: json!({}).into(),
            idempotency_key: "wf:1".to_owned(),
            options,
        };
        let events = vec![
            Event { index: 0, time_ms: task.inbox[0].0, kind: task.inbox[0].1.clone() },
            Event { index: 1, time_ms: T0, kind: scheduled },
        ];
        let completion = WorkflowCompletion { run_id, token: task.token, base_len: 0, events, consumed: 1 };
        assert_eq!(store.complete_workflow_task(T0, "w1", completion).0, Ack::Accepted);
        let blocked = BTreeSet::from(["llm:model".to_owned()]);
        assert_eq!(store.claim_activity_task(T0, "w1", &blocked).err(), Some(NoAttempt::Blocked));
        assert!(store.claim_activity_task(T0, "w2", &BTreeSet::new()).is_ok(), "a poll that may use the key gets it");
    }

    #[test]
    fn an_expired_activity_lease_makes_its_retry_findable_and_moves_the_activity_version() {
        let mut store = Store::new(Config::default());
        run_waiting_on_an_activity(&mut store);
        let no_blocked_keys = BTreeSet::new();
        let lease = store.poll_activity_task(T0, "w1", &no_blocked_keys).expect("activity 1 is due");
        let leased = versions(&store);
        let (report, _) = store.tick(lease.expires_at);
        assert_eq!(report.activity_leases_expired, 1);
        assert_eq!(versions(&store).0, leased.0, "a timed-out attempt that is retried wakes no workflow code");
        assert!(!store.has_workflow_task(lease.expires_at, "w1"));
        assert!(versions(&store).1 > leased.1, "the attempt's retry will fall due");
        assert!(!store.has_activity_task(lease.expires_at, &no_blocked_keys), "the retry waits out its backoff");
        let retry_at = lease.expires_at.plus(Duration::from_millis(1_000));
        assert!(store.has_activity_task(retry_at, &no_blocked_keys));
    }

    #[test]
    fn a_retried_attempt_enters_the_history_in_its_place_with_the_next_task() {
        let mut store = Store::new(Config::default());
        let run_id = run_waiting_on_an_activity(&mut store);
        let no_blocked_keys = BTreeSet::new();
        let first = store.poll_activity_task(T0, "w1", &no_blocked_keys).expect("activity 1 is due");
        let overloaded = AttemptReport::Failed { failure: Failure::Overloaded { retry_after_ms: Some(1_000) } };
        let (ack, _) = store.complete_activity_task(T0, &run_id, 1, first.token, overloaded, "w1");
        assert_eq!(ack, Ack::Accepted);
        assert!(!store.has_workflow_task(T0, "w1"), "the failed attempt asks for no workflow task");
        assert_eq!(store.run(&run_id).expect("started").inbox.len(), 1, "it waits, durable, in the inbox");

        let retry_at = T0.plus(Duration::from_millis(1_000));
        let second = store.poll_activity_task(retry_at, "w1", &no_blocked_keys).expect("the retry is due");
        assert_eq!(second.task.attempt, 2);
        let completed = AttemptReport::Completed { output: json!("done").into() };
        let (ack, _) = store.complete_activity_task(retry_at, &run_id, 1, second.token, completed, "w1");
        assert_eq!(ack, Ack::Accepted);
        let task = store.poll_workflow_task(retry_at, "w1").expect("the completion wakes the code");
        let names: Vec<&str> = task.inbox.iter().map(|(_, kind)| kind.name()).collect();
        assert_eq!(names, ["activity_attempt_failed", "activity_completed"], "in the order they were accepted");
        assert_eq!(task.inbox[0].0, T0, "the failure keeps the time it was accepted");
    }
}
