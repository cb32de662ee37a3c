//! The world of one seed: hosts, messages, crashes and the agenda that drives them.
//!
//! Owns the simulated deployment: a store host (the engine's `Store` over a `Disk` that
//! loses unsynced writes), worker hosts (the engine's `WorkflowWorker`, a rate limiter and a
//! deterministic executor for activity futures), a client, an LLM provider, a tool service
//! and humans, all talking through a faulty `Network`. Every decision that could differ
//! between two runs comes from the seed's `Rng` forks; time only moves when the agenda pops.
//! It never reads a real clock, sleeps or does I/O; a fault is decided only in this file.

use crate::agenda::Agenda;
use crate::check::{self, Evidence};
use crate::disk::{Disk, Encoded};
use crate::human::{HumanModel, HumanPlan};
use crate::llm::{LlmOutcome, LlmProvider};
use crate::net::{HostId, Network};
use crate::plan::{Decided, FaultPlan, Gate, ScheduledFault};
use crate::rng::Rng;
use crate::scenario::{HumanAnswer, Scenario, Start, NOTIFY_HUMAN};
use crate::swarm::{fault, FaultConfig, FaultCounts};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tempest_engine::hash::Digest;
use tempest_engine::history::{History, Kind};
use tempest_engine::ratelimit::{Limit, Limiter};
use tempest_engine::run::AttemptReport;
use tempest_engine::services::{
    Activities, ActivityCtx, ActivityFuture, LlmRequest, LlmResponse, ServiceFuture, Services,
};
use tempest_engine::store::{
    self, Ack, ActivityLease, Claimants, NoAttempt, Record, SignalStatus, Store, TickReport, WorkflowCompletion,
    WorkflowTask,
};
use tempest_engine::worker::{Outcome as TaskOutcome, WorkflowWorker};
use tempest_engine::{Failure, Time};

pub const STORE: HostId = HostId(0);
pub const CLIENT: HostId = HostId(100);
pub const LLM: HostId = HostId(101);
pub const TOOL: HostId = HostId(102);
pub const HUMAN: HostId = HostId(103);

fn worker_host(index: usize) -> HostId {
    HostId(1 + u32::try_from(index).expect("few workers"))
}

/// The value of a request the store takes, which the sender may still keep for a resend: a
/// copy then, else the value itself (the sender timed out and gave it up already).
fn take_shared<T: Clone>(shared: Rc<T>) -> T {
    Rc::try_unwrap(shared).unwrap_or_else(|kept| (*kept).clone())
}

/// How long the store holds a poll that finds no work before answering empty. Long, so a
/// world whose runs wait days for humans spends few events idling.
const POLL_HOLD_MS: u64 = 3_600_000;
/// The hold once faults have healed: nothing can lose a poll any more, so a worker need not
/// ask again before work arrives, and a simulated year of idling costs a few events a week.
const POLL_HOLD_MS_HEALED: u64 = 7 * 86_400_000;
/// The hold of a poll that leaves out rate-limited keys (see `World::poll_hold_ms`).
const POLL_HOLD_MS_KEYS_BLOCKED: u64 = 30_000;
/// How long a requester waits for an answer before retrying (polls: hold + this).
const REQUEST_TIMEOUT_MS: u64 = 5_000;
const SIGNAL_RECHECK_MS: u64 = 2_000;
const FSYNC_MS: u64 = 2;
const LLM_CALL_TIMEOUT_MS: u64 = 120_000;
const TOOL_CALL_TIMEOUT_MS: u64 = 30_000;
/// Heartbeats go out at a third of the activity lease, so two can be lost in a row.
const HEARTBEAT_MS: u64 = 20_000;
const ACTIVITY_SLOTS_PER_WORKER: usize = 4;
const STICKY_CACHE_LEN_MAX: usize = 64;
const AGENDA_LEN_MAX: usize = 1_000_000;
const STEP_COUNT_MAX: u64 = 5_000_000;

/// A store as the world calls it. Test code wraps the real one to prove checks can fail.
pub trait StoreProtocol {
    fn store(&mut self) -> &mut Store;

    fn start(&mut self, now: Time, workflow_id: &str, workflow_type: &str, input: Value) -> (String, Vec<Record>) {
        self.store().start(now, workflow_id, workflow_type, input)
    }

    fn complete_workflow_task(
        &mut self,
        now: Time,
        worker: &str,
        completion: WorkflowCompletion,
    ) -> (Ack, Vec<Record>) {
        self.store().complete_workflow_task(now, worker, completion)
    }

    fn complete_activity_task(
        &mut self,
        now: Time,
        run_id: &str,
        seq: u32,
        token: u64,
        report: AttemptReport,
        worker: &str,
    ) -> (Ack, Vec<Record>) {
        self.store().complete_activity_task(now, run_id, seq, token, report, worker)
    }

    fn tick(&mut self, now: Time) -> (TickReport, Vec<Record>) {
        self.store().tick(now)
    }

    fn signal(
        &mut self,
        now: Time,
        workflow_id: &str,
        signal_id: &str,
        name: &str,
        payload: Value,
    ) -> (SignalStatus, Vec<Record>) {
        self.store().signal(now, workflow_id, signal_id, name, payload)
    }

    /// Whether replies wait until the records behind them are synced (they must).
    fn sync_before_reply(&self) -> bool {
        true
    }
}

struct PlainStore(Store);

impl StoreProtocol for PlainStore {
    fn store(&mut self) -> &mut Store {
        &mut self.0
    }
}

/// What a worker asks before it dispatches rate-limited work. Test code swaps in a broken
/// one to prove `check_rate_limits_held` can fail.
pub trait DispatchLimiter {
    fn next_allowed(&mut self, now: Time, key: &str, token_count: u64) -> Option<Time>;
    fn dispatch(&mut self, now: Time, key: &str, token_count: u64);
    fn finish(&mut self, key: &str);
    fn blocked_keys(&mut self, now: Time) -> BTreeSet<String>;
}

impl DispatchLimiter for Limiter {
    fn next_allowed(&mut self, now: Time, key: &str, token_count: u64) -> Option<Time> {
        Limiter::next_allowed(self, now, key, token_count)
    }

    fn dispatch(&mut self, now: Time, key: &str, token_count: u64) {
        Limiter::dispatch(self, now, key, token_count);
    }

    fn finish(&mut self, key: &str) {
        Limiter::finish(self, key);
    }

    fn blocked_keys(&mut self, now: Time) -> BTreeSet<String> {
        Limiter::blocked_keys(self, now)
    }
}

/// Builds a worker's limiter from its limits; `Some(time)` when the worker restarted then.
pub type LimiterFactory = Arc<dyn Fn(BTreeMap<String, Limit>, Option<Time>) -> Box<dyn DispatchLimiter> + Send + Sync>;

fn new_limiter(
    factory: &Option<LimiterFactory>,
    limits: BTreeMap<String, Limit>,
    restarted_at: Option<Time>,
) -> Box<dyn DispatchLimiter> {
    match (factory, restarted_at) {
        (Some(factory), _) => factory(limits, restarted_at),
        (None, Some(now)) => Box::new(Limiter::after_restart(limits, now)),
        (None, None) => Box::new(Limiter::new(limits)),
    }
}

/// Builds the store protocol around a (recovered) store.
pub type StoreFactory = Arc<dyn Fn(Store) -> Box<dyn StoreProtocol> + Send + Sync>;

/// Everything that defines one world besides the scenario.
#[derive(Clone)]
pub struct Options {
    pub seed: u64,
    pub plan: FaultPlan,
    pub worker_count: usize,
    pub store_factory: Option<StoreFactory>,
    pub limiter_factory: Option<LimiterFactory>,
    /// The workflows to start instead of the scenario's drawn workload (property tests
    /// generate workloads; forks continue given runs).
    pub workload: Option<Vec<Start>>,
    /// Keep every run's history in the outcome (for `--record` and checks in tests).
    pub keep_histories: bool,
    /// Run every end-of-world check after every step too (slow; pinpoints the step that broke
    /// an invariant).
    pub check_every_step: bool,
    /// Histories the store already holds when the world begins, restored through the store's
    /// recovery path (a fork continues a recorded run's prefix). The clock then starts at
    /// their last event, and the plan's times (fault phase, crashes) count from there.
    pub seeded_histories: Vec<History>,
}

impl Options {
    /// The swarm world of `seed`: its fault plan is drawn from the seed.
    pub fn swarm(seed: u64) -> Options {
        Options::with_plan(seed, FaultPlan::draw(seed))
    }

    /// The world of `seed` under `plan`, otherwise as `swarm` builds it. Cheaper than
    /// replacing the plan of `swarm(seed)`, which draws one only to drop it.
    pub fn with_plan(seed: u64, plan: FaultPlan) -> Options {
        Options {
            seed,
            plan,
            worker_count: 3,
            store_factory: None,
            limiter_factory: None,
            workload: None,
            keep_histories: false,
            check_every_step: false,
            seeded_histories: Vec::new(),
        }
    }
}

/// A failed check: its name and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    pub check: String,
    pub message: String,
}

/// What one world came to.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub scenario: &'static str,
    pub failure: Option<CheckFailure>,
    pub faults: FaultCounts,
    pub sometimes: BTreeMap<&'static str, u64>,
    pub runs_completed: u64,
    pub workflows_accepted: u64,
    pub simulated_ms: u64,
    pub step_count: u64,
    pub trace_digest: String,
    pub histories: Vec<History>,
    /// The faults injected at decision points: with the plan, an explicit plan of this run.
    pub injected: Vec<ScheduledFault>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

// ---- messages ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Msg {
    StartReq {
        req_id: u64,
        start: Box<Start>,
    },
    StartResp {
        req_id: u64,
    },
    SignalReq {
        req_id: u64,
        signal: Box<SignalSend>,
    },
    SignalResp {
        req_id: u64,
        status: SignalStatus,
    },
    /// `hold_ms`: how long the store may hold the poll before answering empty.
    PollWorkflow {
        req_id: u64,
        hold_ms: u64,
    },
    PollWorkflowResp {
        req_id: u64,
        task: Option<Box<WorkflowTask>>,
    },
    /// Shared with the worker's pending request, which keeps it for a resend.
    CompleteWorkflow {
        req_id: u64,
        completion: Rc<WorkflowCompletion>,
    },
    CompleteWorkflowResp {
        req_id: u64,
        run_id: String,
        ack: Ack,
    },
    AbandonWorkflow {
        run_id: String,
        token: u64,
    },
    PollActivity {
        req_id: u64,
        blocked_keys: BTreeSet<String>,
        hold_ms: u64,
    },
    PollActivityResp {
        req_id: u64,
        lease: Option<Box<ActivityLease>>,
    },
    CompleteActivity {
        req_id: u64,
        run_id: String,
        seq: u32,
        token: u64,
        /// Shared with the worker's pending request, which keeps it for a resend.
        report: Rc<AttemptReport>,
    },
    CompleteActivityResp {
        req_id: u64,
    },
    Heartbeat {
        req_id: u64,
        run_id: String,
        seq: u32,
        token: u64,
    },
    HeartbeatResp {
        req_id: u64,
        token: u64,
        ack: Ack,
    },
    LlmReq {
        call_id: u64,
        request: Box<LlmRequest>,
    },
    LlmResp {
        call_id: u64,
        result: Result<LlmResponse, Failure>,
    },
    ToolReq {
        call_id: u64,
        call: Box<ToolCall>,
    },
    ToolResp {
        call_id: u64,
        result: Result<Value, Failure>,
    },
}

/// A signal as the client or a human sends it.
#[derive(Clone, Debug)]
struct SignalSend {
    workflow_id: String,
    signal_id: String,
    name: String,
    payload: Value,
}

/// A tool call as a worker sends it.
#[derive(Clone, Debug)]
struct ToolCall {
    name: String,
    arguments: Value,
    idempotency_key: Option<String>,
}

/// A host's name in traces.
fn host_name(host: HostId) -> String {
    match host {
        STORE => "store".to_owned(),
        CLIENT => "client".to_owned(),
        LLM => "llm".to_owned(),
        TOOL => "tool".to_owned(),
        HUMAN => "human".to_owned(),
        HostId(n) => format!("worker-{n}"),
    }
}

impl Msg {
    /// One line for the trace: what the message asks or answers, with its ids.
    fn summary(&self) -> String {
        match self {
            Msg::StartReq { start, .. } => format!("start {} ({})", start.workflow_id, start.workflow_type),
            Msg::StartResp { .. } => "start acknowledged".to_owned(),
            Msg::SignalReq { signal, .. } => format!("signal {} to {}", signal.signal_id, signal.workflow_id),
            Msg::SignalResp { status, .. } => format!("signal {status:?}"),
            Msg::PollWorkflow { .. } => "poll workflow task".to_owned(),
            Msg::PollWorkflowResp { task: Some(task), .. } => {
                format!(
                    "workflow task of run {} ({} inputs, history from {})",
                    task.run_id,
                    task.inbox.len(),
                    task.from
                )
            }
            Msg::PollWorkflowResp { task: None, .. } => "no workflow task".to_owned(),
            Msg::CompleteWorkflow { completion, .. } => {
                format!("complete workflow task of run {} with {} events", completion.run_id, completion.events.len())
            }
            Msg::CompleteWorkflowResp { run_id, ack, .. } => format!("workflow task of run {run_id}: {ack:?}"),
            Msg::AbandonWorkflow { run_id, .. } => format!("abandon workflow task of run {run_id}"),
            Msg::PollActivity { .. } => "poll activity task".to_owned(),
            Msg::PollActivityResp { lease: Some(lease), .. } => format!(
                "activity task {} attempt {} of {}:{} (token {:#x})",
                lease.task.activity_type, lease.task.attempt, lease.task.run_id, lease.task.seq, lease.token
            ),
            Msg::PollActivityResp { lease: None, .. } => "no activity task".to_owned(),
            Msg::CompleteActivity { run_id, seq, report, .. } => match &**report {
                AttemptReport::Completed { .. } => format!("activity {run_id}:{seq} completed"),
                AttemptReport::Failed { failure } => format!("activity {run_id}:{seq} failed: {failure}"),
            },
            Msg::CompleteActivityResp { .. } => "activity report received".to_owned(),
            Msg::Heartbeat { run_id, seq, .. } => format!("heartbeat {run_id}:{seq}"),
            Msg::HeartbeatResp { ack, .. } => format!("heartbeat {ack:?}"),
            Msg::LlmReq { request, .. } => format!("llm request of {} tokens", request.token_count),
            Msg::LlmResp { result: Ok(_), .. } => "llm answer".to_owned(),
            Msg::LlmResp { result: Err(failure), .. } => format!("llm error: {failure}"),
            Msg::ToolReq { call, .. } => format!("tool {} (key {:?})", call.name, call.idempotency_key),
            Msg::ToolResp { result: Ok(_), .. } => "tool answer".to_owned(),
            Msg::ToolResp { result: Err(failure), .. } => format!("tool error: {failure}"),
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Msg::StartReq { .. } => 1,
            Msg::StartResp { .. } => 2,
            Msg::SignalReq { .. } => 3,
            Msg::SignalResp { .. } => 4,
            Msg::PollWorkflow { .. } => 5,
            Msg::PollWorkflowResp { .. } => 6,
            Msg::CompleteWorkflow { .. } => 7,
            Msg::CompleteWorkflowResp { .. } => 8,
            Msg::AbandonWorkflow { .. } => 9,
            Msg::PollActivity { .. } => 10,
            Msg::PollActivityResp { .. } => 11,
            Msg::CompleteActivity { .. } => 12,
            Msg::CompleteActivityResp { .. } => 13,
            Msg::Heartbeat { .. } => 14,
            Msg::HeartbeatResp { .. } => 15,
            Msg::LlmReq { .. } => 16,
            Msg::LlmResp { .. } => 17,
            Msg::ToolReq { .. } => 18,
            Msg::ToolResp { .. } => 19,
        }
    }
}

#[derive(Clone, Debug)]
enum Wake {
    StoreSync,
    StoreTick,
    StoreCrash,
    RequestTimeout {
        req_id: u64,
    },
    /// The earliest request deadline of a host (see `Deadlines`).
    Deadlines,
    /// Start a leased activity once the rate limiter allows it.
    ActivityStart {
        token: u64,
    },
    Heartbeat {
        token: u64,
    },
    /// A stalled worker wakes up and reports its late result.
    ActivityReport {
        token: u64,
    },
    ServiceTimeout {
        call_id: u64,
    },
    ClientRetry {
        req_id: u64,
    },
    ClientStart {
        index: usize,
    },
    HumanSend {
        answer: Box<HumanAnswer>,
        signal_id: String,
    },
}

#[derive(Clone, Debug)]
enum Ev {
    Deliver { from: HostId, to: HostId, msg: Msg },
    Wake { host: HostId, incarnation: u32, wake: Wake },
    Crash { host: HostId },
    Restart { host: HostId },
    Heal,
    LivenessDeadline,
}

// ---- activity executor ------------------------------------------------------------------

enum ServiceCall {
    Llm(LlmRequest),
    Tool { name: String, arguments: Value, idempotency_key: Option<String> },
}

enum ServiceResult {
    Llm(Result<LlmResponse, Failure>),
    Tool(Result<Value, Failure>),
}

#[derive(Default)]
struct CallSlots {
    outbox: Vec<(u64, ServiceCall)>,
    results: BTreeMap<u64, ServiceResult>,
}

/// The services one activity attempt sees: calls become messages, answers resolve futures.
struct SimServices {
    slots: Rc<RefCell<CallSlots>>,
    call_ids: Rc<RefCell<u64>>,
}

impl SimServices {
    fn call(&self, call: ServiceCall) -> u64 {
        let mut next = self.call_ids.borrow_mut();
        *next += 1;
        let call_id = *next;
        self.slots.borrow_mut().outbox.push((call_id, call));
        call_id
    }
}

struct CallFuture<T> {
    slots: Rc<RefCell<CallSlots>>,
    call_id: u64,
    unpack: fn(ServiceResult) -> Result<T, Failure>,
}

impl<T> std::future::Future for CallFuture<T> {
    type Output = Result<T, Failure>;

    fn poll(self: std::pin::Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The worker polls an activity again whenever one of its calls is answered.
        match self.slots.borrow_mut().results.remove(&self.call_id) {
            Some(result) => Poll::Ready((self.unpack)(result)),
            None => Poll::Pending,
        }
    }
}

impl Services for SimServices {
    fn llm(&self, request: LlmRequest) -> ServiceFuture<LlmResponse> {
        let call_id = self.call(ServiceCall::Llm(request));
        Box::pin(CallFuture {
            slots: self.slots.clone(),
            call_id,
            unpack: |r| match r {
                ServiceResult::Llm(result) => result,
                ServiceResult::Tool(_) => panic!("llm call answered by a tool"),
            },
        })
    }

    fn tool(&self, name: &str, arguments: Value, idempotency_key: Option<String>) -> ServiceFuture<Value> {
        let call_id = self.call(ServiceCall::Tool { name: name.to_owned(), arguments, idempotency_key });
        Box::pin(CallFuture {
            slots: self.slots.clone(),
            call_id,
            unpack: |r| match r {
                ServiceResult::Tool(result) => result,
                ServiceResult::Llm(_) => panic!("tool call answered by the llm"),
            },
        })
    }
}

struct Running {
    /// The leased attempt's task as the activity sees it. The context shares the task, so
    /// the worker reads it from here instead of keeping a copy of the lease.
    ctx: ActivityCtx,
    /// When the lease expires (a stalled worker reports after it).
    expires_at: Time,
    future: Option<ActivityFuture>,
    slots: Rc<RefCell<CallSlots>>,
    /// The worker will stall past its lease before reporting (the lease-expiry fault).
    stalled: bool,
    started: bool,
    report: Option<AttemptReport>,
}

// ---- hosts ------------------------------------------------------------------------------

/// On the simulated disk a record is framed as JSON, the encoding the production SQLite
/// journal writes; the disk encodes only a record a crash tears (see `disk`).
impl Encoded for Record {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialize")
    }

    fn decode(bytes: &[u8]) -> Result<Record, String> {
        serde_json::from_slice(bytes).map_err(|error| error.to_string())
    }
}

struct StoreHost {
    up: bool,
    incarnation: u32,
    protocol: Box<dyn StoreProtocol>,
    disk: Disk<Record>,
    unsynced: bool,
    sync_scheduled: bool,
    queued_replies: Vec<(HostId, Msg)>,
    held_workflow_polls: Vec<(HostId, u64, Time)>,
    held_activity_polls: Vec<(HostId, u64, BTreeSet<String>, Time)>,
    tick_scheduled: BTreeSet<Time>,
    /// What held polls were last answered against; `None` after a crash.
    looked_at: Option<LookedAt>,
}

/// The store's versions and due times when held polls were last answered: while a version
/// stays the same and nothing in the store falls due, the polls it covers would find nothing
/// again.
#[derive(Clone, Copy)]
struct LookedAt {
    version: u64,
    workflow_tasks: u64,
    activity_tasks: u64,
    /// The earliest lease expiry or due entry after that look (`Store::next_wakeup`).
    store_due: Time,
    /// `store_due`, or a held poll's deadline if that is earlier.
    due: Time,
}

/// Request deadlines, with one agenda wake per host at its earliest. A request answered in
/// time leaves nothing behind on the agenda, so most timeouts cost no event at all.
///
/// The requester keeps each request's deadline with the request itself (`WorkerHost::requests`,
/// `World::client_requests`) and names it when the answer comes, so no map from request ids is
/// needed here; every request costs one insert and one remove in its host's set.
struct Deadlines {
    /// Per requesting host, by `Deadlines::index`: the workers in order, then the client, then
    /// the humans. Looked up on every request and answer, so indexed rather than searched.
    hosts: Vec<HostDeadlines>,
}

#[derive(Default)]
struct HostDeadlines {
    /// Pending requests by deadline, then request id: the order in which they time out. Kept
    /// sorted, since the client of a big world has a request per start in flight; a list
    /// rather than a tree, since a worker has only a few and most deadlines are later than
    /// every pending one, so a binary search and a short move cost less than a tree's walk.
    pending: Vec<(Time, u64)>,
    /// The time of the host's scheduled wake; a wake at another time is stale.
    wake_at: Option<Time>,
}

impl HostDeadlines {
    fn insert(&mut self, deadline: (Time, u64)) {
        let index = self.pending.partition_point(|pending| *pending < deadline);
        self.pending.insert(index, deadline);
    }

    fn remove(&mut self, deadline: (Time, u64)) {
        if let Ok(index) = self.pending.binary_search(&deadline) {
            self.pending.remove(index);
        }
    }
}

enum Pending {
    PollWorkflow,
    CompleteWorkflow { completion: Rc<WorkflowCompletion>, tries: u32 },
    PollActivity,
    CompleteActivity { run_id: String, seq: u32, token: u64, report: Rc<AttemptReport>, tries: u32 },
    Heartbeat,
}

struct WorkerHost {
    /// Shared, since the store host names the requesting worker on every message and every
    /// held poll it looks at again.
    name: Rc<str>,
    up: bool,
    incarnation: u32,
    workflows: WorkflowWorker,
    limiter: Box<dyn DispatchLimiter>,
    workflow_poll: Option<u64>,
    activity_poll: Option<u64>,
    running: BTreeMap<u64, Running>,
    /// Requests awaiting an answer, by request id, with their deadlines. A worker has only a
    /// few at a time (its two polls, and a report or heartbeat per activity in flight), so a
    /// list searched by id costs less than a map; nothing iterates it, so its order cannot
    /// reach the trace.
    requests: Vec<(u64, Time, Pending)>,
    /// Service call id -> the activity that made it.
    calls: BTreeMap<u64, (u64, bool)>,
}

impl WorkerHost {
    /// Forgets request `req_id` and returns its deadline and what it was, if the worker still
    /// awaited it.
    fn request_done(&mut self, req_id: u64) -> Option<(Time, Pending)> {
        let position = self.requests.iter().position(|(id, ..)| *id == req_id)?;
        let (_, deadline, pending) = self.requests.swap_remove(position);
        Some((deadline, pending))
    }
}

enum ClientRequest {
    Start { index: usize },
    Signal { workflow_id: String, signal_id: String, name: String, payload: Value },
}

/// The world of one seed.
pub struct World<'s> {
    scenario: &'s dyn Scenario,
    options: Options,
    faults: FaultConfig,
    faults_on: bool,
    rng_net: Rng,
    rng_faults: Rng,
    rng_llm: Rng,
    rng_tool: Rng,
    rng_human: Rng,
    agenda: Agenda<Ev>,
    network: Network,
    store: StoreHost,
    workers: Vec<WorkerHost>,
    activities: Activities,
    call_ids: Rc<RefCell<u64>>,
    req_ids: u64,
    llm: LlmProvider,
    human: HumanModel,
    workload: Vec<Start>,
    /// The client's and humans' requests awaiting an answer or a planned re-ask, with the
    /// deadline of those that were sent.
    client_requests: BTreeMap<u64, (ClientRequest, Option<Time>)>,
    deadlines: Deadlines,
    /// Tool answers by idempotency key, so a retried call applies nothing twice.
    tool_answers: BTreeMap<String, Value>,
    counts: FaultCounts,
    /// Decides the faults the world itself injects (see `plan::Gate`).
    gate: Gate,
    /// When the world begins: zero, or the last event of its seeded histories.
    began_at: Time,
    digest: Digest,
    step_count: u64,
    heal_at: Time,
    /// A run closed since the last look: time to see whether the world is done.
    run_closed: bool,
    done: bool,
    failure: Option<CheckFailure>,
    evidence: Evidence,
}

impl<'s> World<'s> {
    pub fn new(scenario: &'s dyn Scenario, options: Options) -> World<'s> {
        let rng = Rng::new(options.seed);
        let faults = options.plan.config.clone();
        if let Err(error) = faults.validate() {
            panic!("fault plan of seed {}: {error}", options.seed);
        }
        let mut workload_rng = rng.fork("workload");
        let workload = options.workload.clone().unwrap_or_else(|| scenario.workload(&mut workload_rng));
        let factory = options.store_factory.clone();
        let mut disk = Disk::new();
        let began_at = options.seeded_histories.iter().filter_map(|h| h.events.last()).map(|e| e.time_ms).max();
        let store = match began_at {
            None => Store::new(store::Config::default()),
            Some(_) => {
                let records: Vec<Record> =
                    options.seeded_histories.iter().flat_map(|h| Record::of_history(&h.events)).collect();
                let (store, epoch) = Store::recover(store::Config::default(), &records);
                for record in records {
                    disk.append(record);
                }
                disk.append(epoch);
                disk.sync();
                store
            }
        };
        let began_at = began_at.unwrap_or(Time::ZERO);
        let protocol: Box<dyn StoreProtocol> = match &factory {
            Some(factory) => factory(store),
            None => Box::new(PlainStore(store)),
        };
        let mut limits_rng = rng.fork("limits");
        let worker_limits = worker_limits(&faults, options.worker_count, &mut limits_rng);
        let registry = scenario.registry();
        let workers = (0..options.worker_count)
            .map(|index| WorkerHost {
                name: format!("worker-{}", index + 1).into(),
                up: true,
                incarnation: 0,
                workflows: WorkflowWorker::new(registry.clone(), STICKY_CACHE_LEN_MAX),
                limiter: new_limiter(&options.limiter_factory, worker_limits.clone(), None),
                workflow_poll: None,
                activity_poll: None,
                running: BTreeMap::new(),
                requests: Vec::new(),
                calls: BTreeMap::new(),
            })
            .collect();
        let heal_at = Time(began_at.0 + options.plan.fault_phase_ms);
        let mut evidence = Evidence::default();
        evidence.worker_limits = worker_limits;
        // A seeded history's reports came from workers that held those attempts then.
        for history in &options.seeded_histories {
            for event in &history.events {
                if let Kind::ActivityCompleted { seq, attempt, worker: Some(worker), .. }
                | Kind::ActivityAttemptFailed { seq, attempt, worker: Some(worker), .. }
                | Kind::ActivityFailed { seq, attempt, worker: Some(worker), .. } = &event.kind
                {
                    evidence.grant(&history.run_id, *seq, *attempt, worker);
                }
            }
        }
        let mut world = World {
            scenario,
            faults: faults.clone(),
            faults_on: true,
            rng_net: rng.fork("network"),
            rng_faults: rng.fork("faults"),
            rng_llm: rng.fork("llm"),
            rng_tool: rng.fork("tool"),
            rng_human: rng.fork("human"),
            agenda: Agenda::starting_at(AGENDA_LEN_MAX, began_at),
            network: Network::new(faults.network.clone()),
            store: StoreHost {
                up: true,
                incarnation: 0,
                protocol,
                disk,
                unsynced: false,
                sync_scheduled: false,
                queued_replies: Vec::new(),
                held_workflow_polls: Vec::new(),
                held_activity_polls: Vec::new(),
                tick_scheduled: BTreeSet::new(),
                looked_at: None,
            },
            workers,
            activities: scenario.activities(),
            call_ids: Rc::new(RefCell::new(0)),
            req_ids: 0,
            llm: LlmProvider::new(faults.llm.clone()),
            human: HumanModel::new(faults.human.clone()),
            workload,
            client_requests: BTreeMap::new(),
            deadlines: Deadlines::new(options.worker_count),
            tool_answers: BTreeMap::new(),
            counts: FaultCounts::new(),
            gate: Gate::new(&options.plan),
            began_at,
            digest: Digest::new(),
            step_count: 0,
            heal_at,
            run_closed: false,
            done: false,
            failure: None,
            evidence,
            options,
        };
        world.network.gate = Gate::new(&world.options.plan);
        world.llm.gate = Gate::new(&world.options.plan);
        world.human.gate = Gate::new(&world.options.plan);
        world.store.disk.gate = Gate::new(&world.options.plan);
        world.schedule_plan();
        world
    }

    fn schedule_plan(&mut self) {
        for (index, start) in self.workload.iter().enumerate() {
            self.agenda.push(start.at, Ev::Wake { host: CLIENT, incarnation: 0, wake: Wake::ClientStart { index } });
        }
        for crash in &self.options.plan.crashes {
            if crash.at_ms < self.options.plan.fault_phase_ms {
                let host = if crash.host == "store" {
                    STORE
                } else {
                    HostId(crash.host.trim_start_matches("worker-").parse().unwrap_or(1))
                };
                self.agenda.push(Time(self.began_at.0 + crash.at_ms), Ev::Crash { host });
            }
        }
        self.agenda.push(self.heal_at, Ev::Heal);
        for index in 0..self.workers.len() {
            self.worker_poll_workflow(index);
            self.worker_poll_activity(self.began_at, index);
        }
    }

    /// Runs the world to its end and checks it.
    pub fn run(mut self) -> Outcome {
        self.run_steps();
        self.finish()
    }

    /// Steps the world until it is done, a check failed, or it can go no further.
    fn run_steps(&mut self) {
        while let Some((now, ev)) = self.agenda.pop() {
            self.step_count += 1;
            self.trace(now, &ev);
            self.handle(now, ev);
            if self.options.check_every_step && self.failure.is_none() && self.store.up {
                if let Err(failure) = self.check_safety() {
                    self.failure = Some(CheckFailure {
                        message: format!("after step {}: {}", self.step_count, failure.message),
                        ..failure
                    });
                }
            }
            if std::mem::take(&mut self.run_closed) && self.all_done() {
                self.done = true;
            }
            if self.done || self.failure.is_some() {
                break;
            }
            if self.step_count >= STEP_COUNT_MAX {
                self.fail(
                    "check_liveness_after_heal",
                    format!("the world took {STEP_COUNT_MAX} steps without finishing"),
                );
                break;
            }
        }
        if self.failure.is_none() && !self.done {
            self.fail("check_liveness_after_heal", "the world ran out of events with runs still open".to_owned());
        }
    }

    /// Every end-of-world safety check over the store as it stands.
    fn check_safety(&mut self) -> Result<(), CheckFailure> {
        let store = self.store.protocol.store();
        check::run_all(self.scenario, store, &store.histories(), &self.evidence).map(|_| ())
    }

    fn fail(&mut self, check: &str, message: String) {
        if self.failure.is_none() {
            tracing::debug!(target: "tempest::world", "check failed: {check}: {message}");
            self.failure = Some(CheckFailure { check: check.to_owned(), message });
        }
    }

    fn trace(&mut self, now: Time, ev: &Ev) {
        let mut bytes = TraceBytes::default();
        bytes.extend(now.as_ms().to_le_bytes());
        match ev {
            Ev::Deliver { from, to, msg } => {
                bytes.extend([0, msg.tag()]);
                bytes.extend(from.0.to_le_bytes());
                bytes.extend(to.0.to_le_bytes());
                if tracing::enabled!(target: "tempest::world", tracing::Level::DEBUG) {
                    tracing::debug!(target: "tempest::world", "{now} {} -> {}: {}", host_name(*from), host_name(*to), msg.summary());
                }
            }
            Ev::Wake { host, wake, .. } => {
                bytes.extend([1]);
                bytes.extend(host.0.to_le_bytes());
                tracing::trace!(target: "tempest::world", "{now} {} wakes: {wake:?}", host_name(*host));
            }
            Ev::Crash { host } => {
                bytes.extend([2]);
                bytes.extend(host.0.to_le_bytes());
                tracing::debug!(target: "tempest::world", "{now} {} CRASHES", host_name(*host));
            }
            Ev::Restart { host } => {
                bytes.extend([3]);
                bytes.extend(host.0.to_le_bytes());
                tracing::debug!(target: "tempest::world", "{now} {} restarts", host_name(*host));
            }
            Ev::Heal => {
                bytes.extend([4]);
                tracing::debug!(target: "tempest::world", "{now} heal: faults off, every host up");
            }
            Ev::LivenessDeadline => bytes.extend([5]),
        }
        self.digest.update(bytes.as_slice());
    }

    fn next_req_id(&mut self) -> u64 {
        self.req_ids += 1;
        self.req_ids
    }

    /// Sends a message through the network at `at` (now, or later for a slow service).
    fn send(&mut self, from: HostId, to: HostId, at: Time, msg: Msg) {
        if self.faults_on
            && self.gate.decide(Decided::Partition, at, self.rng_faults.chance(self.faults.partition_probability))
        {
            let two_way = self.rng_faults.chance(self.faults.partition_two_way_probability);
            let drawn_ms = self.rng_faults.exp_ms(self.faults.partition_duration_ms_mean);
            let duration_ms = self.gate.scheduled_duration_ms().unwrap_or(drawn_ms);
            self.gate.record_duration_ms(duration_ms);
            let until = Time(at.0 + duration_ms);
            self.network.partition(from, to, two_way, until);
            let (a, b) = (host_name(from), host_name(to));
            tracing::debug!(target: "tempest::world", "{at} partition {a} -> {b} (two-way: {two_way}) until {until}");
        }
        let deliveries = self.network.send(from, to, at, &mut self.rng_net);
        if deliveries.is_empty() {
            tracing::debug!(target: "tempest::world", "{at} {} -> {}: message lost", host_name(from), host_name(to));
        }
        let last = deliveries.len().saturating_sub(1);
        let mut msg = Some(msg);
        for (i, time) in deliveries.iter().enumerate() {
            let copy = if i == last { msg.take().expect("one message") } else { msg.clone().expect("one message") };
            self.agenda.push(*time, Ev::Deliver { from, to, msg: copy });
        }
    }

    fn wake(&mut self, host: HostId, at: Time, wake: Wake) {
        let incarnation = self.incarnation(host);
        self.agenda.push(at, Ev::Wake { host, incarnation, wake });
    }

    fn incarnation(&self, host: HostId) -> u32 {
        if host == STORE {
            self.store.incarnation
        } else if let Some(worker) = self.worker_index(host) {
            self.workers[worker].incarnation
        } else {
            0
        }
    }

    fn worker_index(&self, host: HostId) -> Option<usize> {
        let index = (host.0 as usize).checked_sub(1)?;
        (index < self.workers.len() && host != STORE).then_some(index)
    }

    /// The name the store knows worker `host` by (empty for a host that is not a worker).
    fn worker_name(&self, host: HostId) -> Rc<str> {
        self.worker_index(host).map(|i| self.workers[i].name.clone()).unwrap_or_default()
    }

    fn is_up(&self, host: HostId) -> bool {
        if host == STORE {
            self.store.up
        } else if let Some(worker) = self.worker_index(host) {
            self.workers[worker].up
        } else {
            true
        }
    }

    // Inlined into `run_steps`, its only caller, so the popped event is not copied again to
    // be passed on.
    #[inline(always)]
    fn handle(&mut self, now: Time, ev: Ev) {
        match ev {
            Ev::Deliver { from, to, msg } => {
                if !self.is_up(to) {
                    return;
                }
                if to == STORE {
                    self.store_receive(now, from, msg);
                } else if let Some(worker) = self.worker_index(to) {
                    self.worker_receive(now, worker, msg);
                } else if to == CLIENT || to == HUMAN {
                    self.client_receive(now, to, msg);
                } else if to == LLM {
                    self.llm_receive(now, from, msg);
                } else if to == TOOL {
                    self.tool_receive(now, from, msg);
                }
            }
            Ev::Wake { host, incarnation, wake } => {
                if !self.is_up(host) || incarnation != self.incarnation(host) {
                    return;
                }
                if let Wake::Deadlines = wake {
                    self.deadlines_due(now, host);
                } else if host == STORE {
                    self.store_wake(now, wake);
                } else if let Some(worker) = self.worker_index(host) {
                    self.worker_wake(now, worker, wake);
                } else {
                    self.client_wake(now, host, wake);
                }
            }
            Ev::Crash { host } => self.crash(now, host),
            Ev::Restart { host } => self.restart(now, host),
            Ev::Heal => self.heal(now),
            Ev::LivenessDeadline => {
                self.run_closed = true;
                if !self.all_done() {
                    // A safety violation explains a stuck run better than "still open" does.
                    if let Err(failure) = self.check_safety() {
                        self.failure = Some(failure);
                        return;
                    }
                    let open = self.open_workflows();
                    self.fail(
                        "check_liveness_after_heal",
                        format!(
                            "{} workflows still open {} after the heal: {}",
                            open.len(),
                            format_duration(self.scenario.liveness_bound()),
                            open.join(", ")
                        ),
                    );
                }
            }
        }
    }

    // ---- faults -------------------------------------------------------------------------

    fn crash(&mut self, now: Time, host: HostId) {
        if !self.is_up(host) || !self.faults_on {
            return;
        }
        if host == STORE {
            self.counts.add(fault::STORE_CRASH);
            let loss = self.store.disk.crash(now, &mut self.rng_faults, self.faults.disk_torn_write_probability);
            if loss.unsynced_records_lost > 0 {
                self.evidence.sometimes_add(check::sometimes::STORE_CRASH_LOST_WRITES);
            }
            self.store.up = false;
            self.store.incarnation += 1;
            self.store.queued_replies.clear();
            self.store.held_workflow_polls.clear();
            self.store.looked_at = None;
            self.store.held_activity_polls.clear();
            self.store.tick_scheduled.clear();
            self.store.unsynced = false;
            self.store.sync_scheduled = false;
        } else if let Some(index) = self.worker_index(host) {
            self.counts.add(fault::WORKER_CRASH);
            let worker = &mut self.workers[index];
            if worker.running.values().any(|r| r.started) {
                self.evidence.sometimes_add(check::sometimes::WORKER_CRASHED_MID_ACTIVITY);
            }
            worker.up = false;
            worker.incarnation += 1;
            let registry = worker.workflows.registry().clone();
            worker.workflows = WorkflowWorker::new(registry, STICKY_CACHE_LEN_MAX);
            worker.workflow_poll = None;
            worker.activity_poll = None;
            worker.running.clear();
            worker.requests.clear();
            self.deadlines.forget_host(host);
            worker.calls.clear();
        }
        let delay = self.rng_faults.exp_ms(self.faults.restart_delay_ms_mean);
        let at = if now.0 + delay >= self.heal_at.0 { self.heal_at.max(now) } else { Time(now.0 + delay) };
        self.agenda.push(at, Ev::Restart { host });
    }

    fn restart(&mut self, now: Time, host: HostId) {
        if self.is_up(host) {
            return;
        }
        if host == STORE {
            let (store, epoch) = Store::recover(store::Config::default(), self.store.disk.recover().records);
            self.store.protocol = match &self.options.store_factory {
                Some(factory) => factory(store),
                None => Box::new(PlainStore(store)),
            };
            self.store.disk.append(epoch);
            self.store.disk.sync();
            self.store.up = true;
            self.store_after_write(now);
        } else if let Some(index) = self.worker_index(host) {
            self.workers[index].up = true;
            self.workers[index].limiter =
                new_limiter(&self.options.limiter_factory, self.evidence.worker_limits.clone(), Some(now));
            self.worker_poll_workflow(index);
            self.worker_poll_activity(now, index);
        }
    }

    fn heal(&mut self, now: Time) {
        self.faults_on = false;
        self.network.heal();
        self.llm.heal();
        self.gate.heal();
        self.agenda.push(now.plus(self.scenario.liveness_bound()), Ev::LivenessDeadline);
        for host in std::iter::once(STORE).chain((0..self.workers.len()).map(worker_host)) {
            if !self.is_up(host) {
                self.restart(now, host);
            }
        }
    }

    // ---- store host ---------------------------------------------------------------------

    fn store_receive(&mut self, now: Time, from: HostId, msg: Msg) {
        let worker_name = self.worker_name(from);
        let (reply, records) = match msg {
            Msg::StartReq { req_id, start } => {
                let (_, records) =
                    self.store.protocol.start(now, &start.workflow_id, &start.workflow_type, start.input);
                (Some(Msg::StartResp { req_id }), records)
            }
            Msg::SignalReq { req_id, signal } => {
                let SignalSend { workflow_id, signal_id, name, payload } = *signal;
                let (status, records) = self.store.protocol.signal(now, &workflow_id, &signal_id, &name, payload);
                (Some(Msg::SignalResp { req_id, status }), records)
            }
            Msg::PollWorkflow { req_id, hold_ms } => {
                match self.store.protocol.store().poll_workflow_task(now, &worker_name) {
                    Some(task) => (Some(Msg::PollWorkflowResp { req_id, task: Some(Box::new(task)) }), Vec::new()),
                    None => {
                        let deadline = Time(now.0 + hold_ms);
                        self.store.held_workflow_polls.push((from, req_id, deadline));
                        self.store_schedule_tick(deadline);
                        (None, Vec::new())
                    }
                }
            }
            Msg::CompleteWorkflow { req_id, completion } => {
                let run_id = completion.run_id.clone();
                let (ack, records) =
                    self.store.protocol.complete_workflow_task(now, &worker_name, take_shared(completion));
                (Some(Msg::CompleteWorkflowResp { req_id, run_id, ack }), records)
            }
            Msg::AbandonWorkflow { run_id, token } => {
                self.store.protocol.store().abandon_workflow_task(&run_id, token);
                (None, Vec::new())
            }
            Msg::PollActivity { req_id, blocked_keys, hold_ms } => {
                match self.store.protocol.store().poll_activity_task(now, &worker_name, &blocked_keys) {
                    Some(lease) => {
                        self.evidence.grant(&lease.task.run_id, lease.task.seq, lease.task.attempt, &worker_name);
                        (Some(Msg::PollActivityResp { req_id, lease: Some(Box::new(lease)) }), Vec::new())
                    }
                    None => {
                        let deadline = Time(now.0 + hold_ms);
                        self.store.held_activity_polls.push((from, req_id, blocked_keys, deadline));
                        self.store_schedule_tick(deadline);
                        (None, Vec::new())
                    }
                }
            }
            Msg::CompleteActivity { req_id, run_id, seq, token, report } => {
                let (_, records) = self.store.protocol.complete_activity_task(
                    now,
                    &run_id,
                    seq,
                    token,
                    take_shared(report),
                    &worker_name,
                );
                (Some(Msg::CompleteActivityResp { req_id }), records)
            }
            Msg::Heartbeat { req_id, run_id, seq, token } => {
                let ack = self.store.protocol.store().heartbeat(now, &run_id, seq, token);
                (Some(Msg::HeartbeatResp { req_id, token, ack }), Vec::new())
            }
            other => panic!("store received {other:?}"),
        };
        self.store_persist(now, records);
        if let Some(reply) = reply {
            self.store_reply(now, from, reply);
        }
        self.store_after_write(now);
    }

    /// How long a worker asks the store to hold a poll that finds no work. A
    /// poll that leaves out rate-limited keys goes stale as soon as the worker's limiter
    /// frees up (an LLM call ends, a minute passes), so it is held only briefly.
    fn poll_hold_ms(&self, keys_blocked: bool) -> u64 {
        if keys_blocked {
            POLL_HOLD_MS_KEYS_BLOCKED
        } else if self.faults_on {
            POLL_HOLD_MS
        } else {
            POLL_HOLD_MS_HEALED
        }
    }

    fn store_persist(&mut self, now: Time, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        for record in records {
            self.note_record(now, &record);
            self.store.disk.append(record);
        }
        self.store.unsynced = true;
        if !self.store.sync_scheduled {
            self.store.sync_scheduled = true;
            self.wake(STORE, Time(now.0 + FSYNC_MS), Wake::StoreSync);
        }
        if self.faults_on
            && self.gate.decide(Decided::StoreCrash, now, self.rng_faults.chance(self.faults.store_crash_probability))
        {
            // The crash lands before the sync completes: whatever it covered is lost.
            self.wake(STORE, now, Wake::StoreCrash);
        }
    }

    /// Bookkeeping the checks need about what the store wrote.
    fn note_record(&mut self, now: Time, record: &Record) {
        if tracing::enabled!(target: "tempest::world", tracing::Level::DEBUG) {
            match record {
                Record::Append { run_id, events, .. } => {
                    for event in events {
                        tracing::debug!(target: "tempest::world", "{now} store appends to {run_id}: {event}");
                    }
                }
                Record::Inbox { run_id, kind, .. } => {
                    tracing::debug!(target: "tempest::world", "{now} store accepts for {run_id}: {kind}");
                }
                Record::Epoch { epoch } => tracing::debug!(target: "tempest::world", "{now} store epoch {epoch}"),
            }
        }
        if let Record::Append { events, .. } = record {
            for event in events {
                self.run_closed |= event.kind.is_terminal();
                if let Kind::ActivityAttemptFailed { failure: Failure::RateLimited { .. }, retry_at_ms, .. } =
                    &event.kind
                {
                    if retry_at_ms.0 > event.time_ms.0 {
                        self.evidence.sometimes_add(check::sometimes::RETRIED_AFTER_429);
                    }
                }
                // Whether the policy retries it or the workflow asks again (non-retryable), an
                // invalid answer failed validation.
                if let Kind::ActivityAttemptFailed { failure: Failure::InvalidOutput { .. }, .. }
                | Kind::ActivityFailed { failure: Failure::InvalidOutput { .. }, .. } = &event.kind
                {
                    self.evidence.sometimes_add(check::sometimes::LLM_ANSWER_FAILED_VALIDATION);
                }
            }
        }
    }

    fn store_reply(&mut self, now: Time, to: HostId, reply: Msg) {
        if self.store.unsynced && self.store.protocol.sync_before_reply() {
            self.store.queued_replies.push((to, reply));
        } else {
            self.send(STORE, to, now, reply);
        }
    }

    /// After any change: answer held polls that now have work, and plan the next tick.
    fn store_after_write(&mut self, now: Time) {
        // Nothing changed and nothing fell due since the last look: the answers stand.
        let store = self.store.protocol.store();
        let looked_at = self.store.looked_at;
        if looked_at.is_some_and(|looked| now < looked.due && store.version() == looked.version) {
            return;
        }
        // Held polls found nothing at the last look. Unless something in the store fell due
        // since, only the polls of a side of the store that may have gained work can find
        // something now; the others are only answered if they reached their deadline.
        let (find_workflow_tasks, find_activity_tasks) = match looked_at {
            Some(looked) if now < looked.store_due => (
                store.workflow_tasks_version() != looked.workflow_tasks,
                store.activity_tasks_version() != looked.activity_tasks,
            ),
            _ => (true, true),
        };
        if cfg!(debug_assertions) {
            self.check_held_polls_find_nothing(now, !find_workflow_tasks, !find_activity_tasks);
        }
        let expired = |deadline: &Time| *deadline <= now;
        let answer_workflow_polls =
            find_workflow_tasks || self.store.held_workflow_polls.iter().any(|(.., deadline)| expired(deadline));
        // Answered in place: the lists keep their room for the polls held after this look.
        if answer_workflow_polls {
            // A poll that finds nothing says whose polls could still find a task; the others
            // find nothing without being asked (claims only take tasks away).
            let mut claimants = Claimants::Any;
            let mut held = std::mem::take(&mut self.store.held_workflow_polls);
            held.retain(|&(from, req_id, deadline)| {
                let worker_name = self.worker_name(from);
                let may_find = match &claimants {
                    Claimants::Nobody => false,
                    Claimants::Only(only) => **only == *worker_name,
                    Claimants::Any => true,
                };
                let task = if find_workflow_tasks && may_find {
                    match self.store.protocol.store().claim_workflow_task(now, &worker_name) {
                        Ok(task) => Some(task),
                        Err(found_for) => {
                            claimants = found_for;
                            None
                        }
                    }
                } else {
                    if cfg!(debug_assertions) && find_workflow_tasks {
                        let found = self.store.protocol.store().has_workflow_task(now, &worker_name);
                        assert!(
                            !found,
                            "{now}: a held workflow poll of {worker_name} was skipped though it has a task"
                        );
                    }
                    None
                };
                match task {
                    Some(task) => {
                        self.store_reply(now, from, Msg::PollWorkflowResp { req_id, task: Some(Box::new(task)) })
                    }
                    None if deadline <= now => {
                        self.store_reply(now, from, Msg::PollWorkflowResp { req_id, task: None })
                    }
                    None => return true,
                }
                false
            });
            self.store.held_workflow_polls = held;
        }
        let answer_activity_polls =
            find_activity_tasks || self.store.held_activity_polls.iter().any(|(.., deadline)| expired(deadline));
        if answer_activity_polls {
            // Once a poll finds no attempt due at all, the polls after it find none either
            // (claims only take attempts away).
            let mut nothing_due = false;
            let mut held = std::mem::take(&mut self.store.held_activity_polls);
            held.retain(|(from, req_id, blocked, deadline)| {
                let (from, req_id, deadline) = (*from, *req_id, *deadline);
                let lease = if find_activity_tasks && !nothing_due {
                    let worker_name = self.worker_name(from);
                    match self.store.protocol.store().claim_activity_task(now, &worker_name, blocked) {
                        Ok(lease) => Some((lease, worker_name)),
                        Err(why) => {
                            nothing_due = why == NoAttempt::NoneDue;
                            None
                        }
                    }
                } else {
                    if cfg!(debug_assertions) && find_activity_tasks {
                        let found = self.store.protocol.store().has_activity_task(now, blocked);
                        assert!(!found, "{now}: a held activity poll of {from} was skipped though it has a task");
                    }
                    None
                };
                match lease {
                    Some((lease, worker_name)) => {
                        self.evidence.grant(&lease.task.run_id, lease.task.seq, lease.task.attempt, &worker_name);
                        self.store_reply(now, from, Msg::PollActivityResp { req_id, lease: Some(Box::new(lease)) });
                    }
                    None if deadline <= now => {
                        self.store_reply(now, from, Msg::PollActivityResp { req_id, lease: None })
                    }
                    None => return true,
                }
                false
            });
            self.store.held_activity_polls = held;
        }
        let store = self.store.protocol.store();
        let next = store.next_wakeup(now);
        let held_deadline = self.store.held_workflow_polls.iter().map(|(_, _, d)| *d);
        let held_deadline = held_deadline.chain(self.store.held_activity_polls.iter().map(|(_, _, _, d)| *d)).min();
        let store_due = next.unwrap_or(Time(u64::MAX));
        let due = held_deadline.map_or(store_due, |deadline| deadline.min(store_due));
        self.store.looked_at = Some(LookedAt {
            version: store.version(),
            workflow_tasks: store.workflow_tasks_version(),
            activity_tasks: store.activity_tasks_version(),
            store_due,
            due,
        });
        if let Some(at) = next {
            self.store_schedule_tick(at.max(now));
        }
    }

    /// Debug builds check what skipping a held poll's re-poll rests on: the store has nothing
    /// for it.
    fn check_held_polls_find_nothing(&mut self, now: Time, workflow_polls: bool, activity_polls: bool) {
        if workflow_polls {
            for (from, ..) in self.store.held_workflow_polls.clone() {
                let name = self.worker_name(from);
                let found = self.store.protocol.store().has_workflow_task(now, &name);
                assert!(!found, "{now}: a held workflow poll of {name} was not asked again though it has a task");
            }
        }
        if activity_polls {
            for (from, _, blocked, _) in self.store.held_activity_polls.clone() {
                let name = self.worker_name(from);
                let found = self.store.protocol.store().has_activity_task(now, &blocked);
                assert!(!found, "{now}: a held activity poll of {name} was not asked again though it has a task");
            }
        }
    }

    fn store_schedule_tick(&mut self, at: Time) {
        // One tick per distinct time is enough; earlier ticks reschedule later ones.
        if let Some(first) = self.store.tick_scheduled.first() {
            if *first <= at {
                return;
            }
        }
        self.store.tick_scheduled.insert(at);
        self.wake(STORE, at, Wake::StoreTick);
    }

    fn store_wake(&mut self, now: Time, wake: Wake) {
        match wake {
            Wake::StoreSync => {
                self.store.disk.sync();
                self.store.unsynced = false;
                self.store.sync_scheduled = false;
                // Drained in place, so the list keeps its room for the next sync's replies;
                // sending puts messages on the agenda and never queues another reply.
                let mut replies = std::mem::take(&mut self.store.queued_replies);
                for (to, reply) in replies.drain(..) {
                    self.send(STORE, to, now, reply);
                }
                self.store.queued_replies = replies;
            }
            Wake::StoreTick => {
                self.store.tick_scheduled.retain(|t| *t > now);
                let (report, records) = self.store.protocol.tick(now);
                for _ in 0..report.activity_leases_expired {
                    if self.faults_on {
                        self.counts.add(fault::LEASE_EXPIRED);
                    }
                }
                self.store_persist(now, records);
                self.store_after_write(now);
            }
            Wake::StoreCrash => self.crash(now, STORE),
            other => panic!("store woke for {other:?}"),
        }
    }

    // ---- worker hosts -------------------------------------------------------------------

    fn worker_request(&mut self, now: Time, index: usize, pending: Pending, msg: Msg, timeout_ms: u64) {
        let host = worker_host(index);
        let req_id = match &msg {
            Msg::PollWorkflow { req_id, .. }
            | Msg::PollActivity { req_id, .. }
            | Msg::CompleteWorkflow { req_id, .. }
            | Msg::CompleteActivity { req_id, .. }
            | Msg::Heartbeat { req_id, .. } => *req_id,
            other => panic!("not a worker request: {other:?}"),
        };
        let deadline = Time(now.0 + timeout_ms);
        self.workers[index].requests.push((req_id, deadline, pending));
        self.deadline_add(host, deadline, req_id);
        self.send(host, STORE, now, msg);
    }

    /// The store answered worker request `req_id`: forgets it and its deadline, and returns
    /// what it was if the worker still awaited it.
    fn worker_answered(&mut self, index: usize, req_id: u64) -> Option<Pending> {
        let (deadline, pending) = self.workers[index].request_done(req_id)?;
        self.deadlines.done(worker_host(index), deadline, req_id);
        Some(pending)
    }

    fn deadline_add(&mut self, host: HostId, at: Time, req_id: u64) {
        let deadlines = self.deadlines.of_host(host);
        deadlines.insert((at, req_id));
        self.deadline_reschedule(host);
    }

    /// Makes sure the host wakes at its earliest deadline.
    fn deadline_reschedule(&mut self, host: HostId) {
        let deadlines = self.deadlines.of_host(host);
        let Some(&(first, _)) = deadlines.pending.first() else { return };
        if deadlines.wake_at.is_none_or(|at| first < at) {
            deadlines.wake_at = Some(first);
            self.wake(host, first, Wake::Deadlines);
        }
    }

    /// Times out every request of `host` whose deadline has come.
    fn deadlines_due(&mut self, now: Time, host: HostId) {
        let deadlines = self.deadlines.of_host(host);
        if deadlines.wake_at != Some(now) {
            return;
        }
        deadlines.wake_at = None;
        let due: Vec<(Time, u64)> = deadlines.pending.iter().take_while(|(at, _)| *at <= now).copied().collect();
        // Each is taken out just before it is handled, so while one is handled the others still
        // count as pending (a request sent then schedules a wake for them, as the trace records).
        for (at, req_id) in due {
            self.deadlines.done(host, at, req_id);
            let timeout = Wake::RequestTimeout { req_id };
            match self.worker_index(host) {
                Some(index) => self.worker_wake(now, index, timeout),
                None => self.client_wake(now, host, timeout),
            }
        }
        self.deadline_reschedule(host);
    }

    fn worker_poll_workflow(&mut self, index: usize) {
        let now = self.agenda.now();
        if self.workers[index].workflow_poll.is_some() {
            return;
        }
        let req_id = self.next_req_id();
        self.workers[index].workflow_poll = Some(req_id);
        let hold_ms = self.poll_hold_ms(false);
        let msg = Msg::PollWorkflow { req_id, hold_ms };
        self.worker_request(now, index, Pending::PollWorkflow, msg, hold_ms + REQUEST_TIMEOUT_MS);
    }

    fn worker_poll_activity(&mut self, now: Time, index: usize) {
        let worker = &mut self.workers[index];
        if worker.activity_poll.is_some() || worker.running.len() >= ACTIVITY_SLOTS_PER_WORKER {
            return;
        }
        let blocked_keys = worker.limiter.blocked_keys(now);
        let hold_ms = self.poll_hold_ms(!blocked_keys.is_empty());
        let req_id = self.next_req_id();
        self.workers[index].activity_poll = Some(req_id);
        let msg = Msg::PollActivity { req_id, blocked_keys, hold_ms };
        self.worker_request(now, index, Pending::PollActivity, msg, hold_ms + REQUEST_TIMEOUT_MS);
    }

    fn worker_receive(&mut self, now: Time, index: usize, msg: Msg) {
        match msg {
            Msg::PollWorkflowResp { req_id, task } => {
                if self.worker_answered(index, req_id).is_none() {
                    return;
                }
                self.workers[index].workflow_poll = None;
                match task {
                    Some(task) => self.worker_process(now, index, *task),
                    None => self.worker_poll_workflow(index),
                }
            }
            Msg::CompleteWorkflowResp { req_id, run_id, ack } => {
                if self.worker_answered(index, req_id).is_none() {
                    return;
                }
                self.workers[index].workflows.acknowledged(&run_id, ack == Ack::Accepted);
                self.worker_poll_workflow(index);
            }
            Msg::PollActivityResp { req_id, lease } => {
                if self.worker_answered(index, req_id).is_none() {
                    return;
                }
                self.workers[index].activity_poll = None;
                if let Some(lease) = lease {
                    self.worker_lease(now, index, *lease);
                }
                self.worker_poll_activity(now, index);
            }
            Msg::CompleteActivityResp { req_id } => {
                self.worker_answered(index, req_id);
            }
            Msg::HeartbeatResp { req_id, token, ack } => {
                self.worker_answered(index, req_id);
                if let Ack::Rejected(reason) = ack {
                    // The lease is gone: another worker may own this attempt now. Give up.
                    tracing::debug!(target: "tempest::world", "{now} {} gives up attempt {token:#x}: {reason}", self.workers[index].name);
                    self.worker_drop_activity(index, token);
                    self.worker_poll_activity(now, index);
                }
            }
            Msg::LlmResp { call_id, result } => {
                self.worker_service_answer(now, index, call_id, ServiceResult::Llm(result))
            }
            Msg::ToolResp { call_id, result } => {
                self.worker_service_answer(now, index, call_id, ServiceResult::Tool(result))
            }
            other => panic!("worker received {other:?}"),
        }
    }

    fn worker_process(&mut self, now: Time, index: usize, task: WorkflowTask) {
        let (run_id, token) = (task.run_id.clone(), task.token);
        let outcome = self.workers[index].workflows.process(task);
        self.maybe_crash_worker(now, index);
        match outcome {
            TaskOutcome::Complete(completion) => {
                let req_id = self.next_req_id();
                let completion = Rc::new(completion);
                let msg = Msg::CompleteWorkflow { req_id, completion: completion.clone() };
                self.worker_request(
                    now,
                    index,
                    Pending::CompleteWorkflow { completion, tries: 1 },
                    msg,
                    REQUEST_TIMEOUT_MS,
                );
            }
            TaskOutcome::Abandon { .. } => {
                self.send(worker_host(index), STORE, now, Msg::AbandonWorkflow { run_id, token });
                self.worker_poll_workflow(index);
            }
            TaskOutcome::Fail(error) => {
                self.fail(
                    "check_replay_reproduces",
                    format!("{} could not run a workflow task of run {run_id}: {error}", self.workers[index].name),
                );
            }
        }
    }

    fn maybe_crash_worker(&mut self, now: Time, index: usize) {
        if self.faults_on
            && self.gate.decide(Decided::WorkerCrash, now, self.rng_faults.chance(self.faults.worker_crash_probability))
        {
            let at = Time(now.0 + self.rng_faults.exp_ms(50));
            self.agenda.push(at, Ev::Crash { host: worker_host(index) });
        }
    }

    fn worker_lease(&mut self, now: Time, index: usize, lease: ActivityLease) {
        let token = lease.token;
        let stalled = self.faults_on
            && self.gate.decide(
                Decided::LeaseExpired,
                now,
                self.rng_faults.chance(self.faults.lease_expiry_probability),
            );
        let slots = Rc::new(RefCell::new(CallSlots::default()));
        let services = Rc::new(SimServices { slots: slots.clone(), call_ids: self.call_ids.clone() });
        let running = Running {
            ctx: ActivityCtx::new(lease.task, services),
            expires_at: lease.expires_at,
            future: None,
            slots,
            stalled,
            started: false,
            report: None,
        };
        self.workers[index].running.insert(token, running);
        self.maybe_crash_worker(now, index);
        self.worker_try_start(now, index, token);
    }

    /// Starts a leased activity if the rate limiter allows it now, or wakes when it will.
    fn worker_try_start(&mut self, now: Time, index: usize, token: u64) {
        let worker = &mut self.workers[index];
        let Some(running) = worker.running.get(&token) else { return };
        let ctx = running.ctx.clone();
        let options = &ctx.task().options;
        if let Some(key) = &options.rate_limit_key {
            let tokens = options.token_count;
            match worker.limiter.next_allowed(now, key, tokens) {
                Some(at) if at == now => {}
                Some(at) => {
                    self.wake(worker_host(index), at, Wake::ActivityStart { token });
                    return;
                }
                None => {
                    self.wake(worker_host(index), Time(now.0 + 1_000), Wake::ActivityStart { token });
                    return;
                }
            }
            worker.limiter.dispatch(now, key, tokens);
            let name = worker.name.clone();
            self.evidence.dispatched(&name, key, now, tokens);
        }
        let running = self.workers[index].running.get_mut(&token).expect("checked above");
        running.started = true;
        let input = ctx.task().input.clone();
        running.future = Some(self.activities.start(ctx, input));
        if !running.stalled {
            self.wake(worker_host(index), Time(now.0 + HEARTBEAT_MS), Wake::Heartbeat { token });
        }
        self.worker_poll_running(now, index, token);
    }

    /// Polls an activity future, sends its service calls, and reports it when done.
    fn worker_poll_running(&mut self, now: Time, index: usize, token: u64) {
        let Some(running) = self.workers[index].running.get_mut(&token) else { return };
        let Some(future) = running.future.as_mut() else { return };
        let mut cx = Context::from_waker(Waker::noop());
        let poll = future.as_mut().poll(&mut cx);
        let outbox = std::mem::take(&mut running.slots.borrow_mut().outbox);
        for (call_id, call) in outbox {
            let host = worker_host(index);
            self.workers[index].calls.insert(call_id, (token, matches!(call, ServiceCall::Llm(_))));
            let (to, msg, timeout_ms) = match call {
                ServiceCall::Llm(request) => {
                    (LLM, Msg::LlmReq { call_id, request: Box::new(request) }, LLM_CALL_TIMEOUT_MS)
                }
                ServiceCall::Tool { name, arguments, idempotency_key } => {
                    let call = Box::new(ToolCall { name, arguments, idempotency_key });
                    (TOOL, Msg::ToolReq { call_id, call }, TOOL_CALL_TIMEOUT_MS)
                }
            };
            self.wake(host, Time(now.0 + timeout_ms), Wake::ServiceTimeout { call_id });
            self.send(host, to, now, msg);
        }
        let Poll::Ready(result) = poll else { return };
        let worker = &mut self.workers[index];
        let running = worker.running.get_mut(&token).expect("still running");
        running.future = None;
        running.report = Some(match result {
            Ok(output) => AttemptReport::Completed { output },
            Err(failure) => AttemptReport::Failed { failure },
        });
        if let Some(key) = &running.ctx.task().options.rate_limit_key {
            worker.limiter.finish(key);
        }
        if running.stalled {
            // A GC pause or VM migration: the worker resumes after its lease is gone.
            let at = Time(running.expires_at.0.max(now.0) + 1 + self.rng_faults.exp_ms(5_000));
            self.wake(worker_host(index), at, Wake::ActivityReport { token });
        } else {
            self.worker_report(now, index, token);
        }
    }

    fn worker_report(&mut self, now: Time, index: usize, token: u64) {
        let Some(running) = self.workers[index].running.remove(&token) else { return };
        let report = Rc::new(running.report.expect("only finished activities are reported"));
        let (run_id, seq) = (running.ctx.task().run_id.clone(), running.ctx.task().seq);
        let req_id = self.next_req_id();
        let msg = Msg::CompleteActivity { req_id, run_id: run_id.clone(), seq, token, report: report.clone() };
        let pending = Pending::CompleteActivity { run_id, seq, token, report, tries: 1 };
        self.worker_request(now, index, pending, msg, REQUEST_TIMEOUT_MS);
        self.worker_poll_activity(now, index);
    }

    fn worker_drop_activity(&mut self, index: usize, token: u64) {
        let worker = &mut self.workers[index];
        if let Some(running) = worker.running.remove(&token) {
            if running.started && running.future.is_some() {
                if let Some(key) = &running.ctx.task().options.rate_limit_key {
                    worker.limiter.finish(key);
                }
            }
        }
    }

    fn worker_service_answer(&mut self, now: Time, index: usize, call_id: u64, result: ServiceResult) {
        let Some((token, _)) = self.workers[index].calls.remove(&call_id) else { return };
        let Some(running) = self.workers[index].running.get(&token) else { return };
        running.slots.borrow_mut().results.insert(call_id, result);
        self.worker_poll_running(now, index, token);
    }

    fn worker_wake(&mut self, now: Time, index: usize, wake: Wake) {
        match wake {
            Wake::RequestTimeout { req_id } => {
                // Its deadline is gone already: `deadlines_due` took it out.
                let Some((_, pending)) = self.workers[index].request_done(req_id) else {
                    return;
                };
                match pending {
                    Pending::PollWorkflow => {
                        self.workers[index].workflow_poll = None;
                        self.worker_poll_workflow(index);
                    }
                    Pending::PollActivity => {
                        self.workers[index].activity_poll = None;
                        self.worker_poll_activity(now, index);
                    }
                    Pending::CompleteWorkflow { completion, tries } => {
                        if tries >= 3 {
                            // The lease will expire; whoever takes the task over replays.
                            self.workers[index].workflows.evict(&completion.run_id);
                            self.worker_poll_workflow(index);
                            return;
                        }
                        let req_id = self.next_req_id();
                        let msg = Msg::CompleteWorkflow { req_id, completion: completion.clone() };
                        self.worker_request(
                            now,
                            index,
                            Pending::CompleteWorkflow { completion, tries: tries + 1 },
                            msg,
                            REQUEST_TIMEOUT_MS,
                        );
                    }
                    Pending::CompleteActivity { run_id, seq, token, report, tries } => {
                        if tries >= 5 {
                            return;
                        }
                        let req_id = self.next_req_id();
                        let msg = Msg::CompleteActivity {
                            req_id,
                            run_id: run_id.clone(),
                            seq,
                            token,
                            report: report.clone(),
                        };
                        self.worker_request(
                            now,
                            index,
                            Pending::CompleteActivity { run_id, seq, token, report, tries: tries + 1 },
                            msg,
                            REQUEST_TIMEOUT_MS,
                        );
                    }
                    Pending::Heartbeat => {}
                }
            }
            Wake::ActivityStart { token } => self.worker_try_start(now, index, token),
            Wake::Heartbeat { token } => {
                let Some(running) = self.workers[index].running.get(&token) else { return };
                if running.report.is_some() {
                    return;
                }
                let (run_id, seq) = (running.ctx.task().run_id.clone(), running.ctx.task().seq);
                let req_id = self.next_req_id();
                let msg = Msg::Heartbeat { req_id, run_id, seq, token };
                self.worker_request(now, index, Pending::Heartbeat, msg, REQUEST_TIMEOUT_MS);
                self.wake(worker_host(index), Time(now.0 + HEARTBEAT_MS), Wake::Heartbeat { token });
            }
            Wake::ActivityReport { token } => self.worker_report(now, index, token),
            Wake::ServiceTimeout { call_id } => {
                let Some((_, is_llm)) = self.workers[index].calls.get(&call_id) else {
                    return;
                };
                let result = if *is_llm {
                    ServiceResult::Llm(Err(Failure::TimedOut))
                } else {
                    ServiceResult::Tool(Err(Failure::TimedOut))
                };
                self.worker_service_answer(now, index, call_id, result);
            }
            other => panic!("worker woke for {other:?}"),
        }
    }

    // ---- client and humans --------------------------------------------------------------

    fn client_send(&mut self, now: Time, from: HostId, request: ClientRequest) {
        let req_id = self.next_req_id();
        let msg = match &request {
            ClientRequest::Start { index } => Msg::StartReq { req_id, start: Box::new(self.workload[*index].clone()) },
            ClientRequest::Signal { workflow_id, signal_id, name, payload } => Msg::SignalReq {
                req_id,
                signal: Box::new(SignalSend {
                    workflow_id: workflow_id.clone(),
                    signal_id: signal_id.clone(),
                    name: name.clone(),
                    payload: payload.clone(),
                }),
            },
        };
        let deadline = Time(now.0 + REQUEST_TIMEOUT_MS);
        self.client_requests.insert(req_id, (request, Some(deadline)));
        self.deadline_add(from, deadline, req_id);
        self.send(from, STORE, now, msg);
    }

    /// The store answered client request `req_id` of `host`: forgets it and its deadline, and
    /// returns it if the host still awaited it.
    fn client_answered(&mut self, host: HostId, req_id: u64) -> Option<ClientRequest> {
        let (request, deadline) = self.client_requests.remove(&req_id)?;
        if let Some(deadline) = deadline {
            self.deadlines.done(host, deadline, req_id);
        }
        Some(request)
    }

    fn client_receive(&mut self, now: Time, to: HostId, msg: Msg) {
        match msg {
            Msg::StartResp { req_id } => {
                if let Some(ClientRequest::Start { index }) = self.client_answered(to, req_id) {
                    let workflow_id = self.workload[index].workflow_id.clone();
                    self.evidence.accepted_starts.insert(workflow_id);
                }
            }
            Msg::SignalResp { req_id, status } => {
                let Some(request) = self.client_answered(to, req_id) else {
                    return;
                };
                let ClientRequest::Signal { workflow_id, signal_id, .. } = &request else {
                    return;
                };
                match status {
                    SignalStatus::Recorded => {
                        self.evidence.acked_signals.insert((workflow_id.clone(), signal_id.clone()));
                    }
                    SignalStatus::Pending => {
                        let req_id = self.next_req_id();
                        self.client_requests.insert(req_id, (request, None));
                        self.wake(to, Time(now.0 + SIGNAL_RECHECK_MS), Wake::ClientRetry { req_id });
                    }
                    SignalStatus::RunClosed | SignalStatus::UnknownWorkflow => {}
                }
            }
            other => panic!("client received {other:?}"),
        }
    }

    fn client_wake(&mut self, now: Time, host: HostId, wake: Wake) {
        match wake {
            Wake::ClientStart { index } => self.client_send(now, CLIENT, ClientRequest::Start { index }),
            Wake::HumanSend { answer, signal_id } => {
                let answer = *answer;
                let request = ClientRequest::Signal {
                    workflow_id: answer.workflow_id,
                    signal_id,
                    name: answer.signal_name,
                    payload: answer.payload,
                };
                self.client_send(now, HUMAN, request);
            }
            // A request without an answer in time, or a planned re-ask: send it again (same
            // workflow id or signal id, so the store does it at most once).
            Wake::RequestTimeout { req_id } | Wake::ClientRetry { req_id } => {
                // A timed-out request's deadline is gone already: `deadlines_due` took it out.
                if let Some((request, _)) = self.client_requests.remove(&req_id) {
                    self.client_send(now, host, request);
                }
            }
            other => panic!("client woke for {other:?}"),
        }
    }

    // ---- services -----------------------------------------------------------------------

    fn llm_receive(&mut self, now: Time, from: HostId, msg: Msg) {
        let Msg::LlmReq { call_id, request } = msg else { panic!("llm received {msg:?}") };
        let outcome = self.llm.request(now, request.token_count, &mut self.rng_llm);
        let (delay_ms, result) = match outcome {
            LlmOutcome::Answered { latency_ms } => {
                (latency_ms, Ok(self.scenario.llm_answer(&request, &mut self.rng_llm)))
            }
            LlmOutcome::RateLimited { retry_after_ms } => {
                (5, Err(Failure::RateLimited { retry_after_ms: Some(retry_after_ms) }))
            }
            LlmOutcome::ServerError { latency_ms } => (latency_ms, Err(Failure::Overloaded { retry_after_ms: None })),
            LlmOutcome::TimedOut { after_ms } => (after_ms, Err(Failure::TimedOut)),
            LlmOutcome::InvalidOutput { latency_ms } => (
                latency_ms,
                Ok(LlmResponse {
                    content: "{\"truncated".to_owned(),
                    tool_calls: Vec::new(),
                    token_count: request.token_count,
                }),
            ),
        };
        self.send(LLM, from, Time(now.0 + delay_ms), Msg::LlmResp { call_id, result });
    }

    fn tool_receive(&mut self, now: Time, from: HostId, msg: Msg) {
        let Msg::ToolReq { call_id, call } = msg else { panic!("tool received {msg:?}") };
        let ToolCall { name, arguments, idempotency_key } = *call;
        let latency = self.rng_tool.exp_ms(self.faults.tool.latency_ms_mean.max(1));
        let fails = self.faults_on
            && self.gate.decide(Decided::ToolFailure, now, self.rng_tool.chance(self.faults.tool.failure_probability));
        // Half the failures happen before the side effect, half after it (the answer is lost).
        let fails_before = fails && self.rng_tool.chance(0.5);
        let result = if fails_before {
            self.counts.add(fault::TOOL_FAILURE);
            Err(Failure::Application { kind: "tool_error".to_owned(), message: format!("tool {name} failed") })
        } else {
            let answer = match idempotency_key.as_ref().and_then(|k| self.tool_answers.get(&format!("{name}/{k}"))) {
                Some(answer) => answer.clone(),
                None => {
                    let outcome = self.scenario.tool_call(&name, &arguments, &mut self.rng_tool);
                    if let Some(effect) = &outcome.effect {
                        if !self.evidence.apply_effect(effect) {
                            self.fail("check_tool_effects_once", format!("tool {name} applied effect {effect} a second time (idempotency key {idempotency_key:?})"));
                        }
                        if name == NOTIFY_HUMAN {
                            self.plan_human(now, effect, &arguments);
                        }
                    }
                    if let Some(key) = &idempotency_key {
                        self.tool_answers.insert(format!("{name}/{key}"), outcome.result.clone());
                    }
                    outcome.result
                }
            };
            if fails {
                self.counts.add(fault::TOOL_FAILURE);
                Err(Failure::Application {
                    kind: "tool_error".to_owned(),
                    message: format!("tool {name}: connection reset after the call"),
                })
            } else {
                Ok(answer)
            }
        };
        self.send(TOOL, from, Time(now.0 + latency), Msg::ToolResp { call_id, result });
    }

    /// A human gets notification `effect` (a business effect id, one per notification) and
    /// decides whether and when to answer; each answer is a signal with its own id.
    fn plan_human(&mut self, now: Time, effect: &str, arguments: &Value) {
        let Some(answer) = self.scenario.human_answer(arguments, &mut self.rng_human) else {
            return;
        };
        let plan = if self.faults_on {
            self.human.plan(now, &mut self.rng_human)
        } else {
            HumanModel::new(crate::human::HumanFaults {
                never_probability: 0.0,
                late_probability: 0.0,
                duplicate_probability: 0.0,
                ..self.faults.human.clone()
            })
            .plan(now, &mut self.rng_human)
        };
        match plan {
            HumanPlan::Never => self.evidence.sometimes_add(check::sometimes::HUMAN_NEVER_ANSWERED),
            HumanPlan::Answer { after_ms, duplicate_after_ms } => {
                let base = format!("{effect}/{}", answer.signal_name);
                self.wake(
                    HUMAN,
                    Time(now.0 + after_ms),
                    Wake::HumanSend { answer: Box::new(answer.clone()), signal_id: format!("{base}/1") },
                );
                if let Some(after_ms) = duplicate_after_ms {
                    self.wake(
                        HUMAN,
                        Time(now.0 + after_ms),
                        Wake::HumanSend { answer: Box::new(answer), signal_id: format!("{base}/2") },
                    );
                }
            }
        }
    }

    // ---- the end ------------------------------------------------------------------------

    fn open_workflows(&mut self) -> Vec<String> {
        let accepted: Vec<String> = self.evidence.accepted_starts.iter().cloned().collect();
        let store = self.store.protocol.store();
        let mut open: Vec<String> = accepted
            .into_iter()
            .filter(|wid| {
                store
                    .latest_run(wid)
                    .is_none_or(|run| store.status(run).is_none_or(|s| s == tempest_engine::run::Status::Running))
            })
            .collect();
        let unaccepted = self
            .workload
            .iter()
            .filter(|s| !self.evidence.accepted_starts.contains(&s.workflow_id))
            .map(|s| format!("{} (start not acknowledged)", s.workflow_id));
        open.extend(unaccepted);
        open
    }

    /// Whether every start is acknowledged and every accepted workflow's latest run closed:
    /// `open_workflows` is empty. Asked whenever a run closes, so it stops at the first open
    /// workflow instead of listing them all.
    fn all_done(&mut self) -> bool {
        if !self.store.up {
            return false;
        }
        let store = self.store.protocol.store();
        let open = |wid: &String| {
            store
                .latest_run(wid)
                .is_none_or(|run| store.status(run).is_none_or(|s| s == tempest_engine::run::Status::Running))
        };
        if self.evidence.accepted_starts.iter().any(open) {
            return false;
        }
        !self.workload.iter().any(|s| !self.evidence.accepted_starts.contains(&s.workflow_id))
    }

    /// Every fault injected at a decision point so far, in time order.
    fn injected(&self) -> Vec<ScheduledFault> {
        let gates = [&self.gate, &self.network.gate, &self.llm.gate, &self.human.gate, &self.store.disk.gate];
        let mut injected: Vec<ScheduledFault> = gates.iter().flat_map(|gate| gate.injected().iter().cloned()).collect();
        injected.sort_by(|a, b| (a.at_ms, &a.kind, a.nth).cmp(&(b.at_ms, &b.kind, b.nth)));
        injected
    }

    fn finish(mut self) -> Outcome {
        if self.failure.is_none() {
            self.store.disk.sync();
        }
        let store = self.store.protocol.store();
        // The store's own check is judged first, so that the store can then hand its histories
        // over instead of copying them; its verdict still comes in its place among the others.
        let starts = self.failure.is_none().then(|| check::check_starts_exactly_once(store, &self.evidence));
        let histories = std::mem::replace(store, Store::new(store::Config::default())).into_histories();
        if let Some(starts) = starts {
            let finished = crate::scenario::Finished { histories: &histories, tool_effects: &self.evidence.effects };
            let mut facts = self.scenario.sometimes(&finished);
            let checked =
                check::run_all_judged(self.scenario, starts, &histories, &self.evidence).and_then(|replayed| {
                    let early = replayed.signals_taken_after_arriving_early as usize;
                    facts.extend(std::iter::repeat_n(check::sometimes::SIGNAL_BEFORE_WAIT, early));
                    // A world that began from seeded histories (a fork) never saw the side effects
                    // of their prefix, so the scenario's business check would count them as
                    // missing; the simulator's own checks above still judge the fork.
                    if !self.options.seeded_histories.is_empty() {
                        return Ok(());
                    }
                    self.scenario.check(&finished).map_err(|message| CheckFailure {
                        check: format!("check_{}_outcome", self.scenario.name()),
                        message,
                    })
                });
            if let Err(failure) = checked {
                self.failure = Some(failure);
            }
            for fact in facts {
                self.evidence.sometimes_add(fact);
            }
        }
        for history in &histories {
            self.digest.update_structure(history);
        }
        let mut faults = self.counts.clone();
        faults.merge(self.network.fault_counts());
        faults.merge(self.store.disk.fault_counts());
        faults.merge(self.llm.fault_counts());
        faults.merge(self.human.fault_counts());
        let injected = self.injected();
        let runs_completed =
            histories.iter().filter(|h| h.events.last().is_some_and(|e| e.kind.is_terminal())).count() as u64;
        Outcome {
            seed: self.options.seed,
            scenario: self.scenario.name(),
            failure: self.failure,
            faults,
            sometimes: self.evidence.sometimes.clone(),
            runs_completed,
            workflows_accepted: self.evidence.accepted_starts.len() as u64,
            simulated_ms: self.agenda.now().as_ms(),
            step_count: self.step_count,
            trace_digest: self.digest.hex(),
            histories: if self.options.keep_histories { histories } else { Vec::new() },
            injected,
        }
    }
}

/// The bytes one agenda event adds to the trace digest, built on the stack: the trace is
/// digested at every step, and its longest entry (time, tag, two host ids) is 18 bytes.
#[derive(Default)]
struct TraceBytes {
    buf: [u8; 18],
    len: usize,
}

impl TraceBytes {
    fn extend<const N: usize>(&mut self, part: [u8; N]) {
        self.buf[self.len..self.len + N].copy_from_slice(&part);
        self.len += N;
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Deadlines {
    /// Room for the requests of `worker_count` workers, the client and the humans.
    fn new(worker_count: usize) -> Deadlines {
        Deadlines { hosts: (0..worker_count + 2).map(|_| HostDeadlines::default()).collect() }
    }

    /// The deadlines of `host`, a worker (`worker_host(index)` sits at `index`), the client
    /// or the humans; no other host sends requests.
    fn of_host(&mut self, host: HostId) -> &mut HostDeadlines {
        let worker_count = self.hosts.len() - 2;
        let index = match host {
            CLIENT => worker_count,
            HUMAN => worker_count + 1,
            HostId(n) => {
                let index = (n as usize).wrapping_sub(1);
                assert!(index < worker_count, "{host} sends no requests");
                index
            }
        };
        &mut self.hosts[index]
    }

    /// Request `req_id` of `host`, due at `at`, was answered: its deadline is gone.
    fn done(&mut self, host: HostId, at: Time, req_id: u64) {
        self.of_host(host).remove((at, req_id));
    }

    /// A crashed host forgets its requests, and its scheduled wake died with it.
    fn forget_host(&mut self, host: HostId) {
        let deadlines = self.of_host(host);
        deadlines.pending.clear();
        deadlines.wake_at = None;
    }
}

/// Per-worker rate limits for each LLM model key: the provider's quota split across the
/// fleet, times a factor drawn per seed in [0.5, 3) (some seeds over-subscribe, as a
/// misconfigured fleet would, so 429s with `Retry-After` happen and are honoured).
fn worker_limits(faults: &FaultConfig, worker_count: usize, rng: &mut Rng) -> BTreeMap<String, Limit> {
    let factor = 0.5 + 2.5 * rng.f64();
    let share = |quota: u64| -> u64 { (((quota as f64) * factor / worker_count as f64) as u64).max(1) };
    let rpm = faults.llm.rate_limit_rpm.map(share);
    let tpm = faults.llm.rate_limit_tpm.map(|q| share(q).max(crate::check::TOKENS_PER_REQUEST_MAX));
    let limit = Limit { requests_per_minute: rpm, tokens_per_minute: tpm, concurrency_max: Some(2) };
    BTreeMap::from([(crate::check::LLM_KEY.to_owned(), limit)])
}

fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 86_400 {
        format!("{} days", secs / 86_400)
    } else {
        format!("{secs} s")
    }
}

/// Runs one world; a panic inside the engine or the world becomes a failed check named
/// `panic` that carries the panic message, so a sweep reports it like any other failure.
pub fn run_catching(scenario: &dyn Scenario, options: Options) -> Outcome {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let seed = options.seed;
    // The faults injected before a panic survive it, so a panicking seed can be shrunk too.
    let mut injected = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut world = World::new(scenario, options);
        let stepped = catch_unwind(AssertUnwindSafe(|| world.run_steps()));
        injected = world.injected();
        match stepped {
            Ok(()) => world.finish(),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }));
    match result {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = match payload.downcast_ref::<&str>() {
                Some(text) => (*text).to_owned(),
                None => payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".to_owned()),
            };
            // Invariants asserted inside the engine name their check first ("check_x: ...").
            let check = match message.split_once(':') {
                Some((name, _)) if name.starts_with("check_") && !name.contains(' ') => name.to_owned(),
                _ => "panic".to_owned(),
            };
            Outcome {
                seed,
                scenario: scenario.name(),
                failure: Some(CheckFailure { check, message }),
                faults: FaultCounts::new(),
                sometimes: BTreeMap::new(),
                runs_completed: 0,
                workflows_accepted: 0,
                simulated_ms: 0,
                step_count: 0,
                trace_digest: "-".to_owned(),
                histories: Vec::new(),
                injected,
            }
        }
    }
}

/// Shrinks the failure of `outcome` (a world run with `options`): makes its plan explicit,
/// checks that the explicit plan fails the same check, then shrinks it running at most
/// `budget` more worlds. None if the outcome passed or its explicit plan does not fail the
/// same way (which would be a determinism bug worth its own report).
pub fn shrink_failure(
    scenario: &dyn Scenario,
    options: &Options,
    outcome: &Outcome,
    budget: u32,
) -> Option<crate::shrink::Shrunk> {
    let check = &outcome.failure.as_ref()?.check;
    let failing_check = |plan: &FaultPlan| {
        let candidate = Options { plan: plan.clone(), keep_histories: false, ..options.clone() };
        run_catching(scenario, candidate).failure.map(|failure| failure.check)
    };
    let explicit = options.plan.explicit(&outcome.injected);
    if failing_check(&explicit).as_ref() != Some(check) {
        return None;
    }
    let mut shrunk = crate::shrink::shrink(explicit, check, budget, failing_check);
    shrunk.attempts += 1;
    Some(shrunk)
}
