//! The runtime's store seam: `RunStore`, the operations every production store offers, and
//! `DurableStore`, the one implementation today (the engine's `Store` state machine made
//! durable through a `Journal`).
//!
//! Owns the rule that no answer reveals state that is not yet durable: an answer for a client
//! (start, signal, cancel, reads, `wait_closed`) waits until everything accepted before it is
//! synced. The in-process workers' polls, appends, reports and ticks do not wait: those
//! workers share the process (and so the fate) of the store, a crash loses a suffix of the
//! journal and with it exactly the work built on it, which is redone after recovery under the
//! same idempotency keys. It never decides anything about a run itself: every decision is the
//! engine `Store`'s.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use tempest_engine::history::{History, Kind};
use tempest_engine::run::{AttemptReport, Status};
use tempest_engine::store::{
    self, Ack, ActivityLease, Record, SignalStatus, Store, TickReport, WorkflowCompletion, WorkflowTask,
};
use tempest_engine::Time;
use tokio::sync::{oneshot, watch};

/// Why a store operation could not be carried out (not a lost race: that is an `Ack`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("the store's journal failed, nothing more can be made durable: {0}")]
    Journal(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// A run as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunView {
    pub workflow_id: String,
    pub run_id: String,
    pub workflow_type: String,
    /// `running`, `completed`, `failed`, `canceled` or `continued`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub event_count: u64,
}

/// The store protocol as a production store offers it. Every write is conditional: appends
/// build on the expected history length and carry the workflow task's fencing token,
/// activity reports and heartbeats carry the attempt's token, starts are idempotent by
/// workflow id and signals by signal id. A Postgres implementation shared by many runtime
/// processes implements these same operations as transactions (see ARCHITECTURE.md).
pub trait RunStore: Send + Sync + 'static {
    /// Starts a run, or returns the existing latest run of `workflow_id`.
    fn start(&self, now: Time, workflow_id: &str, workflow_type: &str, input: Value) -> StoreFuture<'_, String>;
    fn signal(
        &self,
        now: Time,
        workflow_id: &str,
        signal_id: &str,
        name: &str,
        payload: Value,
    ) -> StoreFuture<'_, SignalStatus>;
    /// `false` when there is no open run to cancel.
    fn cancel(&self, now: Time, workflow_id: &str, reason: &str) -> StoreFuture<'_, bool>;
    /// Claims a workflow task under a lease.
    fn poll_workflow_task(&self, now: Time, worker: &str) -> StoreFuture<'_, Option<WorkflowTask>>;
    /// Appends a completed workflow task at its base length, with its token.
    fn complete_workflow_task(&self, now: Time, worker: &str, completion: WorkflowCompletion) -> StoreFuture<'_, Ack>;
    fn abandon_workflow_task(&self, run_id: &str, token: u64) -> StoreFuture<'_, Ack>;
    /// Claims a due activity attempt whose rate-limit key is not blocked, under a lease.
    fn poll_activity_task(
        &self,
        now: Time,
        worker: &str,
        blocked_keys: &BTreeSet<String>,
    ) -> StoreFuture<'_, Option<ActivityLease>>;
    fn heartbeat(&self, now: Time, run_id: &str, seq: u32, token: u64) -> StoreFuture<'_, Ack>;
    fn complete_activity_task(
        &self,
        now: Time,
        run_id: &str,
        seq: u32,
        token: u64,
        report: AttemptReport,
        worker: &str,
    ) -> StoreFuture<'_, Ack>;
    /// Expires leases and fires due timers and deadlines.
    fn tick(&self, now: Time) -> StoreFuture<'_, TickReport>;
    /// When `tick` next has something to do.
    fn next_wakeup(&self, now: Time) -> Option<Time>;
    /// Changes whenever a poll could find something new.
    fn changes(&self) -> watch::Receiver<u64>;
    /// The latest run of a workflow id.
    fn run(&self, workflow_id: &str) -> StoreFuture<'_, Option<RunView>>;
    /// Latest runs of every workflow id, optionally only those with `status`.
    fn runs(&self, status: Option<&str>) -> StoreFuture<'_, Vec<RunView>>;
    /// The history of the latest run of a workflow id.
    fn history(&self, workflow_id: &str) -> StoreFuture<'_, Option<History>>;
    /// Resolves once the latest run of `workflow_id` is closed and is not continued.
    fn wait_closed(&self, workflow_id: &str) -> StoreFuture<'_, Option<RunView>>;
}

/// Where `DurableStore` makes records durable. `submit` is called under the store's lock, so
/// records arrive in the order the state machine applied them.
pub trait Journal: Send + Sync + 'static {
    /// Queues records; they become durable in order, as `seq` (1, 2, 3, ...).
    fn submit(&self, seq: u64, records: Vec<Record>);
    /// The highest `seq` known durable; a closed channel means the journal failed.
    fn durable(&self) -> watch::Receiver<u64>;
}

/// A journal that keeps records in memory: durable at once, lost with the process. The
/// conformance suite and tests "crash" a store by recovering a new one from its records.
#[derive(Default)]
pub struct MemoryJournal {
    records: Mutex<Vec<Record>>,
    durable: Mutex<Option<watch::Sender<u64>>>,
    durable_rx: Mutex<Option<watch::Receiver<u64>>>,
}

impl MemoryJournal {
    pub fn new() -> MemoryJournal {
        let (tx, rx) = watch::channel(0);
        MemoryJournal {
            records: Mutex::new(Vec::new()),
            durable: Mutex::new(Some(tx)),
            durable_rx: Mutex::new(Some(rx)),
        }
    }

    pub fn records(&self) -> Vec<Record> {
        lock(&self.records).clone()
    }
}

impl Journal for MemoryJournal {
    fn submit(&self, seq: u64, records: Vec<Record>) {
        lock(&self.records).extend(records);
        if let Some(tx) = lock(&self.durable).as_ref() {
            tx.send_replace(seq);
        }
    }

    fn durable(&self) -> watch::Receiver<u64> {
        lock(&self.durable_rx).clone().expect("memory journals never close")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a bug that already took the process's word away;
    // the state machine asserts its invariants before it changes anything.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Inner {
    store: Store,
    /// Sequence number of the last records handed to the journal.
    submitted: u64,
    /// Clients waiting for a workflow id to close.
    closed_waiters: BTreeMap<String, Vec<oneshot::Sender<()>>>,
}

/// The engine's `Store` as the single authority, its records made durable by a `Journal`
/// before any answer that depends on them.
pub struct DurableStore {
    inner: Mutex<Inner>,
    journal: Arc<dyn Journal>,
    durable: watch::Receiver<u64>,
    changes: watch::Sender<u64>,
}

impl DurableStore {
    /// Recovers from `records` (already durable in `journal`) and makes the new epoch durable
    /// before returning.
    pub async fn recover(
        config: store::Config,
        records: Vec<Record>,
        journal: Arc<dyn Journal>,
    ) -> Result<DurableStore, Error> {
        let (store, epoch) = Store::recover(config, records);
        let (changes, _) = watch::channel(store.version());
        let durable = journal.durable();
        let durable_store = DurableStore {
            inner: Mutex::new(Inner { store, submitted: 0, closed_waiters: BTreeMap::new() }),
            journal,
            durable,
            changes,
        };
        let seq = {
            let mut inner = lock(&durable_store.inner);
            durable_store.submit(&mut inner, vec![epoch])
        };
        durable_store.wait_durable(seq).await?;
        Ok(durable_store)
    }

    /// A store whose records live in memory only.
    pub fn in_memory(config: store::Config) -> (DurableStore, Arc<MemoryJournal>) {
        let journal = Arc::new(MemoryJournal::new());
        let (store, epoch) = Store::recover(config, Vec::<Record>::new());
        let (changes, _) = watch::channel(store.version());
        let durable_store = DurableStore {
            inner: Mutex::new(Inner { store, submitted: 0, closed_waiters: BTreeMap::new() }),
            journal: journal.clone(),
            durable: journal.durable(),
            changes,
        };
        {
            let mut inner = lock(&durable_store.inner);
            durable_store.submit(&mut inner, vec![epoch]);
        }
        (durable_store, journal)
    }

    pub fn epoch(&self) -> u32 {
        lock(&self.inner).store.epoch()
    }

    /// Hands records to the journal; returns the sequence number to wait for.
    fn submit(&self, inner: &mut Inner, records: Vec<Record>) -> u64 {
        if !records.is_empty() {
            inner.submitted += 1;
            self.journal.submit(inner.submitted, records);
        }
        inner.submitted
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), Error> {
        if *self.durable.borrow() >= seq {
            return Ok(());
        }
        let mut durable = self.durable.clone();
        durable
            .wait_for(|durable| *durable >= seq)
            .await
            .map(|_| ())
            .map_err(|_| Error::Journal("the journal stopped before syncing".to_owned()))
    }

    /// Runs `operation` on the state machine, hands its records to the journal and tells
    /// pollers when something changed. Returns the value and the sequence to wait for.
    fn write<T>(&self, operation: impl FnOnce(&mut Store) -> (T, Vec<Record>)) -> (T, u64) {
        let mut inner = lock(&self.inner);
        let version = inner.store.version();
        let (value, records) = operation(&mut inner.store);
        let seq = self.submit(&mut inner, records);
        if inner.store.version() != version {
            self.changes.send_replace(inner.store.version());
        }
        (value, seq)
    }

    /// Reads the state machine; the answer may be shown only after `seq` is durable.
    fn read<T>(&self, operation: impl FnOnce(&Store) -> T) -> (T, u64) {
        let inner = lock(&self.inner);
        (operation(&inner.store), inner.submitted)
    }
}

fn view_of(store: &Store, run_id: &str) -> Option<RunView> {
    let run = store.run(run_id)?;
    let state = &run.logical;
    let (result, error) = match state.terminal.as_deref() {
        Some(Kind::WorkflowCompleted { output }) => (Some(output.to_value()), None),
        Some(Kind::WorkflowFailed { error }) => (None, Some(error.clone())),
        _ => (None, None),
    };
    Some(RunView {
        workflow_id: state.workflow_id.clone(),
        run_id: run_id.to_owned(),
        workflow_type: state.workflow_type.clone(),
        status: state.status.name(),
        result,
        error,
        event_count: run.events.len() as u64,
    })
}

fn latest_view(store: &Store, workflow_id: &str) -> Option<RunView> {
    view_of(store, store.latest_run(workflow_id)?)
}

impl RunStore for DurableStore {
    fn start(&self, now: Time, workflow_id: &str, workflow_type: &str, input: Value) -> StoreFuture<'_, String> {
        let (run_id, seq) = self.write(|store| store.start(now, workflow_id, workflow_type, input));
        Box::pin(async move {
            self.wait_durable(seq).await?;
            Ok(run_id)
        })
    }

    fn signal(
        &self,
        now: Time,
        workflow_id: &str,
        signal_id: &str,
        name: &str,
        payload: Value,
    ) -> StoreFuture<'_, SignalStatus> {
        let (status, seq) = self.write(|store| store.signal(now, workflow_id, signal_id, name, payload));
        Box::pin(async move {
            self.wait_durable(seq).await?;
            Ok(status)
        })
    }

    fn cancel(&self, now: Time, workflow_id: &str, reason: &str) -> StoreFuture<'_, bool> {
        let (canceled, seq) = self.write(|store| store.cancel(now, workflow_id, reason));
        Box::pin(async move {
            self.wait_durable(seq).await?;
            Ok(canceled)
        })
    }

    fn poll_workflow_task(&self, now: Time, worker: &str) -> StoreFuture<'_, Option<WorkflowTask>> {
        let (task, _) = self.write(|store| (store.poll_workflow_task(now, worker), Vec::new()));
        Box::pin(async move { Ok(task) })
    }

    fn complete_workflow_task(&self, now: Time, worker: &str, completion: WorkflowCompletion) -> StoreFuture<'_, Ack> {
        let workflow_id = {
            let inner = lock(&self.inner);
            inner.store.run(&completion.run_id).map(|r| r.logical.workflow_id.clone())
        };
        let (ack, _) = self.write(|store| store.complete_workflow_task(now, worker, completion));
        // A closing append wakes the waiters of its workflow id; they re-read the run, and so
        // wait for durability themselves.
        if let (Some(workflow_id), Ack::Accepted) = (workflow_id, &ack) {
            let mut inner = lock(&self.inner);
            let closed =
                inner.store.latest_run(&workflow_id).is_some_and(|r| inner.store.status(r) != Some(Status::Running));
            if closed {
                for waiter in inner.closed_waiters.remove(&workflow_id).unwrap_or_default() {
                    let _ = waiter.send(());
                }
            }
        }
        // In-process workers share the store's fate: their writes need not wait for the sync
        // (see the module comment); every answer to a client still does.
        Box::pin(async move { Ok(ack) })
    }

    fn abandon_workflow_task(&self, run_id: &str, token: u64) -> StoreFuture<'_, Ack> {
        let (ack, _) = self.write(|store| (store.abandon_workflow_task(run_id, token), Vec::new()));
        Box::pin(async move { Ok(ack) })
    }

    fn poll_activity_task(
        &self,
        now: Time,
        worker: &str,
        blocked_keys: &BTreeSet<String>,
    ) -> StoreFuture<'_, Option<ActivityLease>> {
        let (lease, _) = self.write(|store| (store.poll_activity_task(now, worker, blocked_keys), Vec::new()));
        Box::pin(async move { Ok(lease) })
    }

    fn heartbeat(&self, now: Time, run_id: &str, seq: u32, token: u64) -> StoreFuture<'_, Ack> {
        let (ack, _) = self.write(|store| (store.heartbeat(now, run_id, seq, token), Vec::new()));
        Box::pin(async move { Ok(ack) })
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
        let (ack, _) = self.write(|store| store.complete_activity_task(now, run_id, seq, token, report, worker));
        Box::pin(async move { Ok(ack) })
    }

    fn tick(&self, now: Time) -> StoreFuture<'_, TickReport> {
        let (report, _) = self.write(|store| store.tick(now));
        Box::pin(async move { Ok(report) })
    }

    fn next_wakeup(&self, now: Time) -> Option<Time> {
        lock(&self.inner).store.next_wakeup(now)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn run(&self, workflow_id: &str) -> StoreFuture<'_, Option<RunView>> {
        let (view, seq) = self.read(|store| latest_view(store, workflow_id));
        Box::pin(async move {
            self.wait_durable(seq).await?;
            Ok(view)
        })
    }

    fn runs(&self, status: Option<&str>) -> StoreFuture<'_, Vec<RunView>> {
        let (views, seq) = self.read(|store| {
            store
                .workflow_ids()
                .filter_map(|workflow_id| latest_view(store, workflow_id))
                .filter(|view| status.is_none_or(|s| view.status == s))
                .collect::<Vec<_>>()
        });
        Box::pin(async move {
            self.wait_durable(seq).await?;
            Ok(views)
        })
    }

    fn history(&self, workflow_id: &str) -> StoreFuture<'_, Option<History>> {
        let (history, seq) = self.read(|store| {
            let run = store.run(store.latest_run(workflow_id)?)?;
            (!run.events.is_empty()).then(|| History::new(run.events.clone()))
        });
        Box::pin(async move {
            self.wait_durable(seq).await?;
            Ok(history)
        })
    }

    fn wait_closed(&self, workflow_id: &str) -> StoreFuture<'_, Option<RunView>> {
        let workflow_id = workflow_id.to_owned();
        Box::pin(async move {
            loop {
                let waiting = {
                    let mut inner = lock(&self.inner);
                    match inner.store.latest_run(&workflow_id) {
                        None => Err(None),
                        Some(run_id) if inner.store.status(run_id) != Some(Status::Running) => {
                            Err(Some((view_of(&inner.store, run_id), inner.submitted)))
                        }
                        Some(_) => {
                            let (sender, receiver) = oneshot::channel();
                            inner.closed_waiters.entry(workflow_id.clone()).or_default().push(sender);
                            Ok(receiver)
                        }
                    }
                };
                let receiver = match waiting {
                    Ok(receiver) => receiver,
                    Err(None) => return Ok(None),
                    Err(Some((view, seq))) => {
                        self.wait_durable(seq).await?;
                        return Ok(view);
                    }
                };
                let _ = receiver.await;
            }
        })
    }
}
