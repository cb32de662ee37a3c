//! The full-stack mode: one seed of the runtime's real network code under turmoil.
//!
//! Owns the world of one seed. Three turmoil hosts: `server` runs the host loops of
//! `host::run` and the axum app of `http::app` over a `DurableStore` whose records outlive
//! its crashes (a restarted server recovers from them, and from nothing else); `llm` serves
//! the mock provider of `llm::mock_server`, which the server's `LlmClient` reaches over the
//! simulated network; `client` drives the real `ApiClient` as `tempest start`, `signal` and
//! `show` do, retrying starts and signals (idempotent by workflow id and signal id) until the
//! server acknowledges them, then waits for every run to close and fetches its history. The
//! faults of the seed (`faults`) run during a fault phase; then every link heals and every
//! accepted run must close within the workload's bound. The checks (`check`) run at the end.
//!
//! Real: every byte of HTTP (hyper, axum, hyper-util's pooled clients), the API handlers, the
//! store protocol, the host loops, the engine. Simulated: the network (turmoil's TCP, its
//! latency and partitions), the clock (turmoil's, through `host::with_clock`), process
//! crashes (turmoil drops the server's runtime) and the disk (records kept in memory, all of
//! them durable). It never reads the wall clock or opens a real socket, and it never repairs
//! what a check finds.

pub mod check;
pub mod faults;
pub mod net;
pub mod workload;

use crate::client::ApiClient;
use crate::host::{self, with_clock};
use crate::http::{self, ApiState};
use crate::llm::mock_server::{MockServer, Reply};
use crate::llm::LlmClient;
use crate::services::{LlmBackend, LlmFactory};
use crate::store::{DurableStore, Journal, MemoryJournal, RunStore, RunView, StoreFuture};
use check::Evidence;
use faults::{Action, FaultPlan, LlmError, CLIENT, FAULT_PHASE_MS, LLM, SERVER};
use net::{LocalExecutor, TurmoilConnector, TurmoilListener};
use serde_json::Value;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};
use tempest_engine::hash::hash_parts;
use tempest_engine::history::History;
use tempest_engine::run::AttemptReport;
use tempest_engine::store::{Ack, ActivityLease, SignalStatus, TickReport, WorkflowCompletion, WorkflowTask};
use tempest_engine::Time;
use tempest_sim::world::CheckFailure;
use tokio::sync::watch;
pub use workload::Workload;

const API_PORT: u16 = 9000;
const LLM_PORT: u16 = 8080;
/// How long the client waits for one answer before it gives the request up (a partition
/// drops messages, and turmoil's TCP does not resend them).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the client waits between two tries of the same request.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// The long poll of `show`, in ms.
const WAIT_MS: u64 = 2_000;
/// After the liveness bound, how long the client may still take to fetch histories, in ms.
const HISTORY_FETCH_MS: u64 = 30_000;
/// How far turmoil moves every host's clock per step. turmoil has no idle skipping, so a
/// world costs a step per tick of simulated time; 5 ms (not its default 1 ms) runs a world 3
/// to 4 times faster, and every latency, timer and timeout here is a multiple of it or far
/// above it.
const TICK: Duration = Duration::from_millis(5);
/// The server's timeout on one LLM request.
const LLM_TIMEOUT: Duration = Duration::from_secs(5);

/// Wraps the server's store on every (re)start, e.g. with a broken store that a test uses to
/// show a check can fail.
pub type StoreWrapper = Arc<dyn Fn(Arc<dyn RunStore>) -> Arc<dyn RunStore> + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    pub seed: u64,
    pub faults: FaultPlan,
    pub wrap_store: Option<StoreWrapper>,
}

impl Options {
    /// The faults drawn from `seed`.
    pub fn seeded(seed: u64) -> Options {
        Options { seed, faults: FaultPlan::draw(seed), wrap_store: None }
    }
}

/// What one full-stack world came to.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub scenario: String,
    pub failure: Option<CheckFailure>,
    /// Faults by kind, as injected before the world ended.
    pub faults: BTreeMap<String, u64>,
    pub workflows_accepted: u64,
    pub runs_completed: u64,
    pub simulated_ms: u64,
    pub step_count: u64,
    /// A digest of the final histories, what the client saw and when, and the faults.
    pub digest: String,
    pub histories: Vec<History>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// turmoil's simulated time as engine time: ms since the world began, the same on every
/// host and across restarts.
fn simulated_clock() -> Time {
    Time(turmoil::sim_elapsed().map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs one world and its checks. A panic (an engine invariant) is a failure of the check it
/// names, or of `panic`.
pub fn run(workload: &Workload, options: &Options) -> Outcome {
    let world = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_clock(simulated_clock, || run_world(workload, options))
    }));
    world.unwrap_or_else(|payload| {
        let message = match payload.downcast_ref::<&str>() {
            Some(text) => (*text).to_owned(),
            None => payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".to_owned()),
        };
        let check = match message.split_once(':') {
            Some((name, _)) if name.starts_with("check_") && !name.contains(' ') => name.to_owned(),
            _ => "panic".to_owned(),
        };
        Outcome {
            seed: options.seed,
            scenario: workload.scenario.clone(),
            failure: Some(CheckFailure { check, message }),
            faults: options.faults.counts(),
            workflows_accepted: 0,
            runs_completed: 0,
            simulated_ms: 0,
            step_count: 0,
            digest: "panic".to_owned(),
            histories: Vec::new(),
        }
    })
}

fn run_world(workload: &Workload, options: &Options) -> Outcome {
    let journal = Arc::new(MemoryJournal::new());
    let evidence = Arc::new(Mutex::new(Evidence::default()));
    let heal_deadline_ms = FAULT_PHASE_MS + u64::try_from(workload.liveness_bound.as_millis()).unwrap_or(u64::MAX);
    let plan = &options.faults;
    let mut sim = turmoil::Builder::new()
        .rng_seed(options.seed)
        .epoch(UNIX_EPOCH)
        .simulation_duration(Duration::from_millis(heal_deadline_ms + HISTORY_FETCH_MS + 10_000))
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(plan.latency_min_ms))
        .max_message_latency(Duration::from_millis(plan.latency_max_ms))
        .build();

    let mock = MockServer::new();
    for error in &plan.llm_errors {
        mock.push(match error {
            LlmError::RateLimited => {
                Reply::status(429, r#"{"error":{"message":"slow down"}}"#).with_header("retry-after", "1")
            }
            LlmError::Overloaded => Reply::status(503, r#"{"error":{"message":"overloaded"}}"#),
        });
    }
    let served = mock.clone();
    sim.host(LLM, move || {
        let router = served.router();
        async move {
            axum::serve(TurmoilListener::bind(LLM_PORT).await?, router).await?;
            Ok(())
        }
    });

    let server_life = Rc::new(Cell::new(0_u32));
    let (server_journal, server_evidence) = (journal.clone(), evidence.clone());
    let server_workload = workload.clone();
    let wrap_store = options.wrap_store.clone();
    sim.host(SERVER, move || {
        server_life.set(server_life.get() + 1);
        serve(ServerLife {
            life: server_life.get(),
            journal: server_journal.clone(),
            evidence: server_evidence.clone(),
            workload: server_workload.clone(),
            wrap_store: wrap_store.clone(),
        })
    });

    sim.client(CLIENT, drive_client(workload.clone(), evidence.clone(), heal_deadline_ms));

    let mut step_count = 0_u64;
    // Faults by kind as injected: a world that ends early never reaches its later faults.
    let mut injected = BTreeMap::new();
    if plan.latency_max_ms > 1 {
        injected.insert("link_latency".to_owned(), 1);
    }
    let mut timeline = plan.timeline().into_iter().peekable();
    let stepped = loop {
        let elapsed_ms = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
        while let Some((_, action)) = timeline.next_if(|(at_ms, _)| *at_ms <= elapsed_ms) {
            match action {
                Action::Partition(a, b) => {
                    sim.partition(a, b);
                    *injected.entry(format!("partition_{a}_{b}")).or_default() += 1;
                }
                Action::Repair(a, b) => sim.repair(a, b),
                Action::Crash => {
                    sim.crash(SERVER);
                    *injected.entry("server_crash_restart".to_owned()).or_default() += 1;
                }
                Action::Restart => sim.bounce(SERVER),
            }
        }
        step_count += 1;
        match sim.step() {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(error) => break Err(error.to_string()),
        }
    };
    let simulated_ms = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
    drop(sim);
    for error in plan.llm_errors.iter().take(mock.received().len()) {
        let kind = match error {
            LlmError::RateLimited => "llm_rate_limited_reply",
            LlmError::Overloaded => "llm_overloaded_reply",
        };
        *injected.entry(kind.to_owned()).or_default() += 1;
    }

    let evidence = lock(&evidence).clone();
    let records = journal.records();
    let failure = match stepped {
        // The client gives up at the liveness deadline, so the world only outlives its
        // duration if the client itself hangs.
        Err(message) if message.starts_with("Ran for duration") => Some(CheckFailure {
            check: "check_liveness_after_heal".to_owned(),
            message: format!("the world did not end: {message}"),
        }),
        // A host's software returned an error (it could not bind, recover its store, ...) or
        // a client task panicked.
        Err(message) => Some(CheckFailure { check: "host_failed".to_owned(), message }),
        Ok(()) => check::run_all(workload, &evidence, &records, heal_deadline_ms).err(),
    };
    let histories: Vec<History> = evidence.histories.values().cloned().collect();
    Outcome {
        seed: options.seed,
        scenario: workload.scenario.clone(),
        failure,
        faults: injected,
        workflows_accepted: evidence.started.len() as u64,
        runs_completed: histories.iter().filter(|h| h.events.last().is_some_and(|e| e.kind.is_terminal())).count()
            as u64,
        simulated_ms,
        step_count,
        digest: digest(plan, &evidence),
        histories,
    }
}

/// A digest of everything a world's outcome consists of, as 16 hex digits.
fn digest(plan: &FaultPlan, evidence: &Evidence) -> String {
    let mut parts = vec![format!("{plan:?}")];
    parts.extend(evidence.histories.values().map(History::to_json));
    parts.push(format!("{:?}", evidence.started));
    parts.push(format!("{:?}", evidence.acked_signals));
    parts.push(format!("{:?}", evidence.closed));
    parts.push(format!("{:?}", evidence.never_accepted));
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    format!("{:016x}", hash_parts(&parts))
}

/// What one life of the server process starts from.
struct ServerLife {
    life: u32,
    journal: Arc<MemoryJournal>,
    evidence: Arc<Mutex<Evidence>>,
    workload: Workload,
    wrap_store: Option<StoreWrapper>,
}

/// The server process: recovers its store from the durable records, runs the host loops and
/// serves the API until turmoil crashes it.
async fn serve(life: ServerLife) -> turmoil::Result {
    let ServerLife { life, journal, evidence, workload, wrap_store } = life;
    let records = journal.records();
    let journal: Arc<dyn Journal> = journal;
    let store = DurableStore::recover(Default::default(), records, journal).await?;
    let mut store: Arc<dyn RunStore> = Arc::new(store);
    if let Some(wrap) = &wrap_store {
        store = wrap(store);
    }
    let store: Arc<dyn RunStore> = Arc::new(Recording { inner: store, evidence });
    let llm: LlmFactory = Box::new(|| {
        let mut config =
            crate::llm::Config::new(&format!("http://{LLM}:{LLM_PORT}/v1"), "mock-model").expect("a valid LLM URL");
        config.timeout = LLM_TIMEOUT;
        Rc::new(LlmClient::with_connector_and_executor(config, TurmoilConnector, LocalExecutor)) as Rc<dyn LlmBackend>
    });
    let mut config = host::Config::new(workload.registry.clone(), workload.activities.clone(), llm);
    config.worker_name = format!("{SERVER}-{life}");
    // Never stopped: the process ends only when turmoil crashes it.
    let (_stop, stopped) = watch::channel(false);
    tokio::task::spawn_local(host::run(store.clone(), config, stopped));
    let router = http::app(ApiState { store, registry: workload.registry, token: None }, None);
    net::serve_local(TurmoilListener::bind(API_PORT).await?, router).await?;
    Ok(())
}

/// Sleeps until the simulated clock reads `at_ms`.
async fn sleep_until_ms(at_ms: u64) {
    let now = simulated_clock().0;
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

type Client = ApiClient<TurmoilConnector>;

/// How one try of a request ended.
enum Tried {
    Answered(crate::client::Answer),
    /// No answer (refused, reset, timed out) or a 5xx: worth another try.
    Retry,
}

async fn try_once<F: std::future::Future<Output = Result<crate::client::Answer, crate::client::Error>>>(
    request: F,
) -> Tried {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(answer)) if answer.status >= 500 => Tried::Retry,
        Ok(Ok(answer)) => Tried::Answered(answer),
        Ok(Err(_)) | Err(_) => Tried::Retry,
    }
}

/// The client host: every workflow of the workload on its own task, as independent users of
/// the CLI would run them.
async fn drive_client(workload: Workload, evidence: Arc<Mutex<Evidence>>, heal_deadline_ms: u64) -> turmoil::Result {
    let client = ApiClient::with_connector(&format!("http://{SERVER}:{API_PORT}"), None, TurmoilConnector)?;
    let mut tasks = Vec::new();
    for start in workload.starts {
        let signals: Vec<_> = workload.signals.iter().filter(|s| s.workflow_id == start.workflow_id).cloned().collect();
        tasks.push(tokio::task::spawn_local(drive_workflow(
            client.clone(),
            start,
            signals,
            evidence.clone(),
            heal_deadline_ms,
        )));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// Starts one workflow (and repeats the start if asked), sends its signals, waits for its run
/// to close and fetches its history; everything it sees goes into `evidence`.
async fn drive_workflow(
    client: Client,
    start: workload::Start,
    signals: Vec<workload::Signal>,
    evidence: Arc<Mutex<Evidence>>,
    deadline_ms: u64,
) {
    let id = start.workflow_id.clone();
    sleep_until_ms(start.at_ms).await;
    let mut sends = if start.repeat { 2 } else { 1 };
    while sends > 0 {
        if simulated_clock().0 > deadline_ms {
            if !lock(&evidence).started.contains_key(&id) {
                lock(&evidence).never_accepted.insert(id.clone());
            }
            return;
        }
        match try_once(client.start(&start.workflow_type, &id, &start.input)).await {
            Tried::Answered(answer) if answer.is_success() => {
                let run_id = answer.body["run_id"].as_str().unwrap_or_default().to_owned();
                lock(&evidence).started.entry(id.clone()).or_default().insert(run_id);
                sends -= 1;
                continue;
            }
            Tried::Answered(answer) => {
                lock(&evidence).unexpected.push(format!("start {id}: {} {}", answer.status, answer.error_message()));
                return;
            }
            Tried::Retry => {}
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
    for signal in signals {
        sleep_until_ms(signal.at_ms).await;
        while simulated_clock().0 <= deadline_ms {
            match try_once(client.signal(&id, &signal.name, &signal.signal_id, &signal.payload)).await {
                Tried::Answered(answer) if answer.is_success() => {
                    lock(&evidence).acked_signals.insert((id.clone(), signal.signal_id.clone()));
                    break;
                }
                // The run closed before it read the signal: not acknowledged, nothing to check.
                Tried::Answered(answer) if answer.status == 409 => break,
                Tried::Answered(answer) => {
                    lock(&evidence).unexpected.push(format!(
                        "signal {id}/{}: {} {}",
                        signal.signal_id,
                        answer.status,
                        answer.error_message()
                    ));
                    break;
                }
                Tried::Retry => tokio::time::sleep(RETRY_INTERVAL).await,
            }
        }
    }
    while simulated_clock().0 <= deadline_ms {
        if let Tried::Answered(answer) = try_once(client.wait(&id, WAIT_MS)).await {
            match answer.body["status"].as_str() {
                Some("running") => continue,
                Some(status) => {
                    lock(&evidence).closed.insert(id.clone(), (status.to_owned(), simulated_clock().0));
                    break;
                }
                None => {
                    lock(&evidence).unexpected.push(format!("show {id}: {} {}", answer.status, answer.body));
                    break;
                }
            }
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
    while simulated_clock().0 <= deadline_ms + HISTORY_FETCH_MS {
        match try_once(client.history(&id)).await {
            Tried::Answered(answer) if answer.is_success() => {
                // Decoded as is, not validated: a malformed history is for
                // `check_histories_well_formed` to name.
                match serde_json::from_value::<History>(answer.body) {
                    Ok(history) => {
                        lock(&evidence).histories.insert(id.clone(), history);
                    }
                    Err(error) => lock(&evidence).unexpected.push(format!("history {id}: {error}")),
                }
                return;
            }
            // A run whose first workflow task never completed has no history to serve yet;
            // if it should have, liveness says so.
            Tried::Answered(answer) if answer.status == 404 => return,
            Tried::Answered(answer) => {
                lock(&evidence).unexpected.push(format!("history {id}: {} {}", answer.status, answer.error_message()));
                return;
            }
            Tried::Retry => tokio::time::sleep(RETRY_INTERVAL).await,
        }
    }
}

/// The server's store as its workers see it, recording which worker each activity attempt
/// was leased to (for `check_activity_results_recorded_once`); everything else passes through.
struct Recording {
    inner: Arc<dyn RunStore>,
    evidence: Arc<Mutex<Evidence>>,
}

impl RunStore for Recording {
    fn start(&self, now: Time, workflow_id: &str, workflow_type: &str, input: Value) -> StoreFuture<'_, String> {
        self.inner.start(now, workflow_id, workflow_type, input)
    }

    fn signal(
        &self,
        now: Time,
        workflow_id: &str,
        signal_id: &str,
        name: &str,
        payload: Value,
    ) -> StoreFuture<'_, SignalStatus> {
        self.inner.signal(now, workflow_id, signal_id, name, payload)
    }

    fn cancel(&self, now: Time, workflow_id: &str, reason: &str) -> StoreFuture<'_, bool> {
        self.inner.cancel(now, workflow_id, reason)
    }

    fn poll_workflow_task(&self, now: Time, worker: &str) -> StoreFuture<'_, Option<WorkflowTask>> {
        self.inner.poll_workflow_task(now, worker)
    }

    fn complete_workflow_task(&self, now: Time, worker: &str, completion: WorkflowCompletion) -> StoreFuture<'_, Ack> {
        self.inner.complete_workflow_task(now, worker, completion)
    }

    fn abandon_workflow_task(&self, run_id: &str, token: u64) -> StoreFuture<'_, Ack> {
        self.inner.abandon_workflow_task(run_id, token)
    }

    fn poll_activity_task(
        &self,
        now: Time,
        worker: &str,
        blocked_keys: &BTreeSet<String>,
    ) -> StoreFuture<'_, Option<ActivityLease>> {
        let worker = worker.to_owned();
        let polled = self.inner.poll_activity_task(now, &worker, blocked_keys);
        Box::pin(async move {
            let lease = polled.await?;
            if let Some(lease) = &lease {
                let task = &lease.task;
                lock(&self.evidence)
                    .grants
                    .entry((task.run_id.clone(), task.seq, task.attempt))
                    .or_default()
                    .insert(worker);
            }
            Ok(lease)
        })
    }

    fn heartbeat(&self, now: Time, run_id: &str, seq: u32, token: u64) -> StoreFuture<'_, Ack> {
        self.inner.heartbeat(now, run_id, seq, token)
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
        self.inner.complete_activity_task(now, run_id, seq, token, report, worker)
    }

    fn tick(&self, now: Time) -> StoreFuture<'_, TickReport> {
        self.inner.tick(now)
    }

    fn next_wakeup(&self, now: Time) -> Option<Time> {
        self.inner.next_wakeup(now)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn run(&self, workflow_id: &str) -> StoreFuture<'_, Option<RunView>> {
        self.inner.run(workflow_id)
    }

    fn runs(&self, status: Option<&str>) -> StoreFuture<'_, Vec<RunView>> {
        self.inner.runs(status)
    }

    fn history(&self, workflow_id: &str) -> StoreFuture<'_, Option<History>> {
        self.inner.history(workflow_id)
    }

    fn wait_closed(&self, workflow_id: &str) -> StoreFuture<'_, Option<RunView>> {
        self.inner.wait_closed(workflow_id)
    }
}
