//! The host: one thread with a current-thread tokio runtime that claims tasks from a
//! `RunStore`, runs workflow code through the engine's `WorkflowWorker` and activities
//! through `Activities`, fires timers and expires leases on the wall clock; and (when asked)
//! a second thread that serves HTTP.
//!
//! Owns the loops that drive the store protocol, the same protocol the simulator drives in
//! virtual time: a workflow-task dispatcher, an activity dispatcher (within the engine's rate
//! `Limiter`), and a ticker. Workflow and activity futures use `Rc` and stay on this thread.
//! It never decides anything about a run: every decision is the store's or the engine's.
//!
//! Time: everything in the runtime reads the clock through `now()`, the wall clock in
//! production. A full-stack world (`fullstack`) runs these same loops inside turmoil's
//! runtime and installs its simulated clock for its thread with `with_clock`; that is the only
//! difference between the two.

use crate::services::{HostServices, LlmFactory, MockTools};
use crate::store::RunStore;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempest_engine::ratelimit::{Limit, Limiter};
use tempest_engine::run::AttemptReport;
use tempest_engine::services::{Activities, ActivityCtx, Services};
use tempest_engine::store::{Ack, ActivityLease, WorkflowTask};
use tempest_engine::worker::{Outcome, WorkflowWorker};
use tempest_engine::{Registry, Time};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::LocalSet;

thread_local! {
    /// The clock `with_clock` installed on this thread; none in production.
    static CLOCK: Cell<Option<fn() -> Time>> = const { Cell::new(None) };
}

/// Engine time: the wall clock, unless a simulated world installed its clock on this thread.
pub fn now() -> Time {
    match CLOCK.with(Cell::get) {
        Some(clock) => clock(),
        None => wall_clock(),
    }
}

/// The wall clock as engine time: milliseconds since the Unix epoch.
pub fn wall_clock() -> Time {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Time(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// Runs `body` with `clock` as this thread's `now()`, then puts the previous clock back.
///
/// Why per thread and not a field of `Config`: the HTTP handlers read the time too, and a
/// turmoil simulation runs every host (server, client, LLM) on the one thread that steps it,
/// all on the one simulated clock. Sweeps run one world per thread, each with its own clock.
pub fn with_clock<T>(clock: fn() -> Time, body: impl FnOnce() -> T) -> T {
    struct Restore(Option<fn() -> Time>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CLOCK.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CLOCK.with(|c| c.replace(Some(clock))));
    body()
}

/// What the host runs.
pub struct Config {
    pub registry: Registry,
    /// Activity implementations; the first set that has a type runs it.
    pub activities: Vec<Activities>,
    pub llm: LlmFactory,
    /// Rate limits per limiter key (e.g. `llm:gpt-4o`); keys not listed are unlimited.
    pub limits: BTreeMap<String, Limit>,
    /// Workflow tasks processed at once (their appends share group commits).
    pub workflow_task_count_max: usize,
    /// Activity attempts running at once.
    pub activity_task_count_max: usize,
    /// This worker's name in leases and histories.
    pub worker_name: String,
    /// Live machines kept so the normal path does not replay.
    pub sticky_cache_len_max: usize,
}

impl Config {
    pub fn new(registry: Registry, activities: Vec<Activities>, llm: LlmFactory) -> Config {
        Config {
            registry,
            activities,
            llm,
            limits: BTreeMap::new(),
            workflow_task_count_max: 128,
            activity_task_count_max: 256,
            worker_name: "runtime".to_owned(),
            sticky_cache_len_max: 10_000,
        }
    }
}

/// A running host. Dropping it without `stop` leaves the thread running until the process
/// ends.
pub struct Host {
    store: Arc<dyn RunStore>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    http_thread: Option<std::thread::JoinHandle<()>>,
}

/// The HTTP server the host thread also runs: a bound listener and the app to serve.
pub struct Http {
    pub listener: std::net::TcpListener,
    pub router: axum::Router,
}

impl Host {
    /// Starts the host thread on `store`, and the HTTP thread when `http` is given.
    pub fn start(store: Arc<dyn RunStore>, config: Config, http: Option<Http>) -> std::io::Result<Host> {
        let (stop, stopped) = watch::channel(false);
        let thread_store = store.clone();
        let worker_stopped = stopped.clone();
        let thread = std::thread::Builder::new().name("tempest-host".to_owned()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread tokio runtime builds");
            let local = LocalSet::new();
            local.block_on(&runtime, run(thread_store, config, worker_stopped));
        })?;
        // HTTP gets a thread of its own: parsing and answering requests then runs next to the
        // workers instead of taking turns with them, and the store's lock is all they share.
        let http_thread = match http {
            Some(http) => Some(std::thread::Builder::new().name("tempest-http".to_owned()).spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread tokio runtime builds");
                runtime.block_on(serve_http(http, stopped));
            })?),
            None => None,
        };
        Ok(Host { store, stop, thread: Some(thread), http_thread })
    }

    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// Stops the loops and the HTTP server and waits for their threads.
    pub fn stop(mut self) {
        self.stop.send_replace(true);
        for thread in [self.thread.take(), self.http_thread.take()].into_iter().flatten() {
            let _ = thread.join();
        }
    }

    /// Waits for the host thread, which ends only when `stop` is called from elsewhere or it
    /// panicked; `false` when it panicked.
    pub fn join(mut self) -> bool {
        self.thread.take().is_none_or(|thread| thread.join().is_ok())
    }
}

struct Worker {
    store: Arc<dyn RunStore>,
    name: String,
    workflows: RefCell<WorkflowWorker>,
    activities: Vec<Activities>,
    services: Rc<dyn Services>,
    limiter: RefCell<Limiter>,
    /// Runs whose last completion waits for its durable ack; the next task of such a run waits
    /// too, so it finds the run's machine in the sticky cache instead of replaying.
    awaiting_ack: RefCell<BTreeMap<String, Rc<Notify>>>,
}

/// The host's loops as one future, for a caller that already runs a current-thread runtime
/// and a `LocalSet` (`Host::start` on its own thread; a full-stack world inside turmoil's
/// host). It spawns the loops with `spawn_local` and returns once `stopped` turns true.
pub async fn run(store: Arc<dyn RunStore>, config: Config, mut stopped: watch::Receiver<bool>) {
    let services: Rc<dyn Services> =
        Rc::new(HostServices { llm: (config.llm)(), tools: Rc::new(MockTools::default()) });
    let worker = Rc::new(Worker {
        store,
        name: config.worker_name,
        workflows: RefCell::new(WorkflowWorker::new(config.registry, config.sticky_cache_len_max.max(1))),
        activities: config.activities,
        services,
        // This process forgot what it dispatched in an earlier life: one quiet window.
        limiter: RefCell::new(if config.limits.is_empty() {
            Limiter::new(config.limits)
        } else {
            Limiter::after_restart(config.limits, now())
        }),
        awaiting_ack: RefCell::new(BTreeMap::new()),
    });
    tokio::task::spawn_local(workflow_dispatcher(worker.clone(), config.workflow_task_count_max.max(1)));
    tokio::task::spawn_local(activity_dispatcher(worker.clone(), config.activity_task_count_max.max(1)));
    tokio::task::spawn_local(ticker(worker.store.clone()));
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Serves the HTTP app until `stopped`, letting requests in flight finish.
async fn serve_http(Http { listener, router }: Http, mut stopped: watch::Receiver<bool>) {
    if let Err(error) = listener.set_nonblocking(true) {
        tracing::error!(%error, "cannot serve HTTP");
        return;
    }
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot serve HTTP");
            return;
        }
    };
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
        tracing::error!(%error, "HTTP server stopped");
    }
}

/// Waits for a change in the store, or until `wakeup`, or at most a second.
async fn wait_for_change(changes: &mut watch::Receiver<u64>, wakeup: Option<Time>) {
    let now = now();
    let wait = wakeup.map_or(Duration::from_secs(1), |at| Duration::from_millis(at.0.saturating_sub(now.0)));
    let _ = tokio::time::timeout(wait.min(Duration::from_secs(1)), changes.changed()).await;
}

async fn workflow_dispatcher(worker: Rc<Worker>, task_count_max: usize) {
    let slots = Arc::new(Semaphore::new(task_count_max));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut changes = worker.store.changes();
        match worker.store.poll_workflow_task(now(), &worker.name).await {
            Ok(Some(task)) => {
                tokio::task::spawn_local(run_workflow_task(worker.clone(), task, permit));
                // Let the task run (and release its run) before the next poll, which would
                // otherwise look past every run claimed in this burst.
                tokio::task::yield_now().await;
            }
            Ok(None) => {
                drop(permit);
                let wakeup = worker.store.next_wakeup(now());
                wait_for_change(&mut changes, wakeup).await;
            }
            Err(error) => {
                tracing::error!(%error, "polling workflow tasks failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run_workflow_task(worker: Rc<Worker>, task: WorkflowTask, _slot: OwnedSemaphorePermit) {
    let (run_id, token) = (task.run_id.clone(), task.token);
    loop {
        // One thread: nothing can run between this look and the await, so no wake-up is lost.
        let Some(acked) = worker.awaiting_ack.borrow().get(&run_id).cloned() else { break };
        acked.notified().await;
    }
    let outcome = worker.workflows.borrow_mut().process(task);
    match outcome {
        Outcome::Complete(completion) => {
            let event_count = completion.events.len();
            worker.awaiting_ack.borrow_mut().insert(run_id.clone(), Rc::new(Notify::new()));
            let answer = worker.store.complete_workflow_task(now(), &worker.name, completion).await;
            let acked = worker.awaiting_ack.borrow_mut().remove(&run_id);
            match answer {
                Ok(ack) => {
                    if let Ack::Rejected(reason) = &ack {
                        tracing::debug!(run_id, reason, "workflow task rejected");
                    } else {
                        tracing::trace!(run_id, event_count, "workflow task appended");
                    }
                    worker.workflows.borrow_mut().acknowledged(&run_id, ack == Ack::Accepted);
                }
                Err(error) => {
                    tracing::error!(run_id, %error, "workflow task not made durable");
                    worker.workflows.borrow_mut().evict(&run_id);
                }
            }
            if let Some(acked) = acked {
                acked.notify_waiters();
            }
        }
        Outcome::Abandon { reason } => {
            tracing::debug!(run_id, reason, "workflow task abandoned");
            let _ = worker.store.abandon_workflow_task(&run_id, token).await;
        }
        Outcome::Fail(error) => {
            // The code no longer matches the history (or its type is gone): the run waits,
            // its lease expires, and a fixed build can take it over.
            tracing::error!(run_id, %error, "workflow task failed");
            worker.workflows.borrow_mut().evict(&run_id);
        }
    }
}

async fn activity_dispatcher(worker: Rc<Worker>, task_count_max: usize) {
    let slots = Arc::new(Semaphore::new(task_count_max));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut changes = worker.store.changes();
        let now = now();
        let blocked: BTreeSet<String> = worker.limiter.borrow_mut().blocked_keys(now);
        match worker.store.poll_activity_task(now, &worker.name, &blocked).await {
            Ok(Some(lease)) => {
                tokio::task::spawn_local(run_activity(worker.clone(), lease, permit));
                tokio::task::yield_now().await;
            }
            Ok(None) => {
                drop(permit);
                let wakeup = worker.store.next_wakeup(now);
                wait_for_change(&mut changes, wakeup).await;
            }
            Err(error) => {
                tracing::error!(%error, "polling activity tasks failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run_activity(worker: Rc<Worker>, lease: ActivityLease, _slot: OwnedSemaphorePermit) {
    let task = lease.task;
    let (run_id, seq, token) = (task.run_id.clone(), task.seq, lease.token);
    let rate_key = task.options.rate_limit_key.clone();
    if let Some(key) = &rate_key {
        let token_count = task.options.token_count;
        loop {
            let now = now();
            let allowed = worker.limiter.borrow_mut().next_allowed(now, key, token_count);
            match allowed {
                Some(at) if at <= now => break,
                Some(at) => tokio::time::sleep(Duration::from_millis(at.0 - now.0)).await,
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        worker.limiter.borrow_mut().dispatch(now(), key, token_count);
    }
    let implementation =
        worker.activities.iter().find(|a| a.contains(&task.activity_type)).or_else(|| worker.activities.first());
    let mut attempt = match implementation {
        Some(activities) => {
            activities.start(ActivityCtx::new(task.clone(), worker.services.clone()), task.input.clone())
        }
        None => Activities::new().start(ActivityCtx::new(task.clone(), worker.services.clone()), task.input.clone()),
    };
    // Heartbeats at a third of the lease, so one can be late without losing it.
    let lease_ms = lease.expires_at.0.saturating_sub(now().0).max(300);
    // The first heartbeat is a period from now; awaiting an interval's immediate first tick
    // would cost a timer-wheel turn (about a millisecond) on every attempt.
    let period = Duration::from_millis(lease_ms / 3);
    let mut heartbeats = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let result = loop {
        tokio::select! {
            result = &mut attempt => break Some(result),
            _ = heartbeats.tick() => {
                match worker.store.heartbeat(now(), &run_id, seq, token).await {
                    Ok(Ack::Accepted) => {}
                    Ok(Ack::Rejected(reason)) => {
                        // Another worker may own this attempt now: give it up.
                        tracing::debug!(run_id, seq, reason, "activity attempt given up");
                        break None;
                    }
                    Err(error) => {
                        tracing::error!(run_id, seq, %error, "heartbeat failed");
                        break None;
                    }
                }
            }
        }
    };
    if let Some(key) = &rate_key {
        worker.limiter.borrow_mut().finish(key);
    }
    let Some(result) = result else { return };
    let report = match result {
        Ok(output) => AttemptReport::Completed { output },
        Err(failure) => AttemptReport::Failed { failure },
    };
    match worker.store.complete_activity_task(now(), &run_id, seq, token, report, &worker.name).await {
        Ok(Ack::Accepted) => {}
        Ok(Ack::Rejected(reason)) => tracing::debug!(run_id, seq, reason, "activity report rejected"),
        Err(error) => tracing::error!(run_id, seq, %error, "activity report not made durable"),
    }
}

/// The least time between two ticks: under load something falls due at nearly every change,
/// and a tick per change would double the work of every write. Timers and lease expiries are
/// at most this late.
const TICK_INTERVAL_MIN: Duration = Duration::from_millis(5);

/// Fires timers and deadlines and expires leases when they fall due.
async fn ticker(store: Arc<dyn RunStore>) {
    // Everything due up to `ticked_at` was handled by the last tick.
    let mut ticked_at = Time::ZERO;
    loop {
        let mut changes = store.changes();
        let now = now();
        let wakeup = store.next_wakeup(ticked_at);
        if wakeup.is_some_and(|at| at <= now) {
            if let Err(error) = store.tick(now).await {
                tracing::error!(%error, "tick failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            ticked_at = now;
            tokio::time::sleep(TICK_INTERVAL_MIN).await;
            continue;
        }
        wait_for_change(&mut changes, wakeup).await;
    }
}
