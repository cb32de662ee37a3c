//! Proof that every named check can fail: worlds run with a deliberately broken store, limiter
//! or workflow, written here in test code, and a sweep must report the check that guards
//! against exactly that bug.
//!
//! Owns the broken pieces (store wrappers that ignore fencing tokens, reply before syncing,
//! start twice, fire timers far too late, stamp a lagging clock; a limiter that never limits;
//! scenarios that call a tool without an idempotency key or branch on process-global state)
//! and `sweep_until_failure`. A check that no broken world can trip guards nothing. These
//! tests never change the simulator or the engine: every fault comes in through the seams
//! `Options` offers. Each test sweeps a small range of seeds found to fail when it was
//! written, and falls back to the first 10,000 seeds only if the world has moved on; what it
//! asserts is the check's name, never a seed's details.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempest_engine::history::Event;
use tempest_engine::ratelimit::Limit;
use tempest_engine::run::AttemptReport;
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse};
use tempest_engine::store::{Ack, Record, SignalStatus, Store, WorkflowCompletion};
use tempest_engine::{Ctx, Failure, Kind, Registry, RetryPolicy, Time, WorkflowResult};
use tempest_sim::check;
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Start, ToolOutcome};
use tempest_sim::world::{self, DispatchLimiter, LimiterFactory, StoreFactory, StoreProtocol};
use tempest_sim::{Options, Outcome, Scenario};

/// The most seeds any of these sweeps may run.
const SEED_COUNT_MAX: u64 = 10_000;

/// Runs `seeds` in order and returns the first world that fails, or `None`.
fn sweep_until_failure(
    scenario: &dyn Scenario,
    options_for_seed: impl Fn(u64) -> Options,
    seeds: Range<u64>,
) -> Option<Outcome> {
    assert!(seeds.end - seeds.start <= SEED_COUNT_MAX, "a sweep of {seeds:?} runs more than {SEED_COUNT_MAX} seeds");
    seeds.map(|seed| world::run_catching(scenario, options_for_seed(seed))).find(|outcome| !outcome.passed())
}

fn with_store(seed: u64, factory: StoreFactory) -> Options {
    Options { store_factory: Some(factory), ..Options::swarm(seed) }
}

fn scenario(name: &str) -> Box<dyn Scenario> {
    tempest_scenarios::find(name).unwrap_or_else(|| panic!("scenario {name} is built in"))
}

// ---- broken stores ------------------------------------------------------------------------

/// Starts another run when the workflow id is already taken, instead of returning the run
/// that exists: a client's retried start then runs the workflow twice.
pub(crate) struct StartNotIdempotent(pub(crate) Store);

impl StoreProtocol for StartNotIdempotent {
    fn store(&mut self) -> &mut Store {
        &mut self.0
    }

    fn start(&mut self, now: Time, workflow_id: &str, workflow_type: &str, input: Value) -> (String, Vec<Record>) {
        let run_count = self.0.chain(workflow_id).len();
        if run_count == 0 {
            return self.0.start(now, workflow_id, workflow_type, input);
        }
        let run_id = format!("{workflow_id}-again-{run_count}");
        let kind = Kind::WorkflowStarted {
            workflow_type: workflow_type.to_owned(),
            workflow_id: workflow_id.to_owned(),
            run_id: run_id.clone(),
            input: input.into(),
            parent: None,
            continued_from: None,
        };
        let record = Record::Inbox { run_id: run_id.clone(), time_ms: now, kind };
        self.0.apply(&record);
        (run_id, vec![record])
    }
}

/// Answers before the records behind the answer are synced: a crash then loses what was
/// acknowledged.
struct RepliesBeforeSync(Store);

impl StoreProtocol for RepliesBeforeSync {
    fn store(&mut self) -> &mut Store {
        &mut self.0
    }

    fn sync_before_reply(&self) -> bool {
        false
    }
}

/// Acknowledges a signal as recorded as soon as it is accepted into the run's inbox, before
/// a workflow task has put it in the history; if the run closes first, the signal is lost.
struct SignalAckedEarly(Store);

impl StoreProtocol for SignalAckedEarly {
    fn store(&mut self) -> &mut Store {
        &mut self.0
    }

    fn signal(
        &mut self,
        now: Time,
        workflow_id: &str,
        signal_id: &str,
        name: &str,
        payload: Value,
    ) -> (SignalStatus, Vec<Record>) {
        let (status, records) = self.0.signal(now, workflow_id, signal_id, name, payload);
        let status = if status == SignalStatus::Pending { SignalStatus::Recorded } else { status };
        (status, records)
    }
}

/// Ignores the fencing token of an activity report: whatever attempt the reporter held, its
/// result is recorded as the current lease's attempt.
struct ActivityTokenIgnored(Store);

impl StoreProtocol for ActivityTokenIgnored {
    fn store(&mut self) -> &mut Store {
        &mut self.0
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
        let token = self.0.activity_lease(run_id, seq).map_or(token, |lease| lease.token);
        self.0.complete_activity_task(now, run_id, seq, token, report, worker)
    }
}

/// Appends a workflow task completion the real store rejects (stale fencing token, or built on
/// a shorter history) anyway, re-indexed to the end of the history: a worker whose lease
/// expired and the worker that took the task over both get their decisions recorded.
struct WorkflowTokenIgnored(Store);

impl StoreProtocol for WorkflowTokenIgnored {
    fn store(&mut self) -> &mut Store {
        &mut self.0
    }

    fn complete_workflow_task(
        &mut self,
        now: Time,
        worker: &str,
        completion: WorkflowCompletion,
    ) -> (Ack, Vec<Record>) {
        let (ack, records) = self.0.complete_workflow_task(now, worker, completion.clone());
        let Some(run) = self.0.run(&completion.run_id) else {
            return (ack, records);
        };
        if ack == Ack::Accepted || run.logical.is_closed() {
            return (ack, records);
        }
        let len = run.events.len() as u64;
        let events = completion.events.into_iter().zip(len..).map(|(event, index)| Event { index, ..event }).collect();
        let record = Record::Append { run_id: completion.run_id, time_ms: now, events, consumed: completion.consumed };
        self.0.apply(&record);
        (Ack::Accepted, vec![record])
    }
}

/// How far behind the clock of `ClockBehind` runs, in ms: longer than any activity here.
const CLOCK_SKEW_MS: u64 = 600_000;

/// Stamps activity results with a clock that runs ten minutes behind the rest of the store
/// (as a second store node with a skewed clock would), so results land in histories before
/// the events that scheduled them.
struct ClockBehind(Store);

impl StoreProtocol for ClockBehind {
    fn store(&mut self) -> &mut Store {
        &mut self.0
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
        let skewed_now = Time(now.0.saturating_sub(CLOCK_SKEW_MS));
        self.0.complete_activity_task(skewed_now, run_id, seq, token, report, worker)
    }
}

/// How much later than asked `TimersLate` fires a durable timer: a deadline in seconds read
/// as milliseconds.
const TIMER_LATENESS_FACTOR: u64 = 1_000;

/// Records every durable timer to fire a thousand times later than the workflow asked (a
/// unit mix-up), so a three-day wait outlasts any liveness bound. A store whose `tick` does
/// nothing at all would be the blunter bug, but the world then asks it to tick again at the
/// same instant forever and stops only at its step limit, a minute per seed in a dev build.
struct TimersLate(Store);

impl StoreProtocol for TimersLate {
    fn store(&mut self) -> &mut Store {
        &mut self.0
    }

    fn complete_workflow_task(
        &mut self,
        now: Time,
        worker: &str,
        mut completion: WorkflowCompletion,
    ) -> (Ack, Vec<Record>) {
        for event in &mut completion.events {
            if let Kind::TimerStarted { duration_ms, fire_at_ms, .. } = &mut event.kind {
                *fire_at_ms = Time(event.time_ms.0 + *duration_ms * TIMER_LATENESS_FACTOR);
            }
        }
        self.0.complete_workflow_task(now, worker, completion)
    }
}

// ---- a broken limiter ---------------------------------------------------------------------

/// Lets every dispatch through, whatever the worker's limits say.
struct Unlimited;

impl DispatchLimiter for Unlimited {
    fn next_allowed(&mut self, now: Time, _key: &str, _token_count: u64) -> Option<Time> {
        Some(now)
    }

    fn dispatch(&mut self, _now: Time, _key: &str, _token_count: u64) {}

    fn finish(&mut self, _key: &str) {}

    fn blocked_keys(&mut self, _now: Time) -> BTreeSet<String> {
        BTreeSet::new()
    }
}

// ---- broken scenarios ---------------------------------------------------------------------

/// Each workflow writes one note through a tool; the note is the tool's side effect.
struct NoteTaker {
    /// Whether the tool call carries the activity's idempotency key (it must).
    keyed: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Note {
    workflow_id: String,
}

async fn note_taker(ctx: Ctx, note: Note) -> WorkflowResult<Value> {
    let retry = RetryPolicy::attempts(8).initial_interval(Duration::from_millis(500));
    let saved: Value = ctx.activity("write_note", &note).retry(retry).start_to_close(Duration::from_secs(60)).await?;
    Ok(saved)
}

async fn write_note_keyed(ctx: ActivityCtx, note: Note) -> Result<Value, Failure> {
    ctx.tool("write_note", json!({ "workflow_id": note.workflow_id })).await
}

async fn write_note_unkeyed(ctx: ActivityCtx, note: Note) -> Result<Value, Failure> {
    ctx.tool_with_key("write_note", json!({ "workflow_id": note.workflow_id }), None).await
}

fn small_workload(workflow_type: &str, rng: &mut Rng) -> Vec<Start> {
    (0..rng.range_inclusive(4, 8))
        .map(|i| Start {
            at: Time(rng.below(60_000)),
            workflow_id: format!("{workflow_type}-{i}"),
            workflow_type: workflow_type.to_owned(),
            input: json!({ "workflow_id": format!("{workflow_type}-{i}") }),
        })
        .collect()
}

fn no_llm(request: &LlmRequest) -> LlmResponse {
    LlmResponse { content: "{}".to_owned(), tool_calls: Vec::new(), token_count: request.token_count }
}

impl Scenario for NoteTaker {
    fn name(&self) -> &'static str {
        if self.keyed {
            "note_taker"
        } else {
            "note_taker_without_idempotency_key"
        }
    }

    fn description(&self) -> &'static str {
        "each workflow writes one note through a tool"
    }

    fn registry(&self) -> Registry {
        let mut registry = Registry::new();
        registry.register("note_taker", note_taker);
        registry
    }

    fn activities(&self) -> Activities {
        let mut activities = Activities::new();
        if self.keyed {
            activities.register("write_note", write_note_keyed);
        } else {
            activities.register("write_note", write_note_unkeyed);
        }
        activities
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        small_workload("note_taker", rng)
    }

    fn llm_answer(&self, request: &LlmRequest, _rng: &mut Rng) -> LlmResponse {
        no_llm(request)
    }

    fn tool_call(&self, _name: &str, arguments: &Value, _rng: &mut Rng) -> ToolOutcome {
        let workflow_id = arguments["workflow_id"].as_str().unwrap_or("?");
        ToolOutcome { result: json!({ "saved": true }), effect: Some(format!("note:{workflow_id}")) }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(3_600)
    }
}

/// Process-global state the nondeterministic workflow reads: each execution of its code,
/// live or replayed, sees the next value.
static COIN_FLIPS: AtomicU64 = AtomicU64::new(0);

/// A workflow that picks its activity by a process-global counter instead of through `Ctx`.
struct CoinFlip {
    /// Whether the workflow reads the counter (the bug) or always takes the same path.
    reads_global_state: bool,
}

async fn coin_flip(ctx: Ctx, _input: Value) -> WorkflowResult<Value> {
    let heads = COIN_FLIPS.fetch_add(1, Ordering::Relaxed) % 2 == 0;
    let side = if heads { "heads" } else { "tails" };
    let answer: Value = ctx.activity(side, &json!({})).await?;
    Ok(answer)
}

async fn coin_flip_fixed(ctx: Ctx, _input: Value) -> WorkflowResult<Value> {
    let answer: Value = ctx.activity("heads", &json!({})).await?;
    Ok(answer)
}

async fn side(_ctx: ActivityCtx, _input: Value) -> Result<Value, Failure> {
    Ok(json!("landed"))
}

impl Scenario for CoinFlip {
    fn name(&self) -> &'static str {
        if self.reads_global_state {
            "coin_flip_on_global_state"
        } else {
            "coin_flip"
        }
    }

    fn description(&self) -> &'static str {
        "each workflow runs one of two activities"
    }

    fn registry(&self) -> Registry {
        let mut registry = Registry::new();
        if self.reads_global_state {
            registry.register("coin_flip", coin_flip);
        } else {
            registry.register("coin_flip", coin_flip_fixed);
        }
        registry
    }

    fn activities(&self) -> Activities {
        let mut activities = Activities::new();
        activities.register("heads", side).register("tails", side);
        activities
    }

    fn workload(&self, rng: &mut Rng) -> Vec<Start> {
        small_workload("coin_flip", rng)
    }

    fn llm_answer(&self, request: &LlmRequest, _rng: &mut Rng) -> LlmResponse {
        no_llm(request)
    }

    fn tool_call(&self, _name: &str, _arguments: &Value, _rng: &mut Rng) -> ToolOutcome {
        ToolOutcome { result: Value::Null, effect: None }
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_secs(3_600)
    }
}

// ---- the sweeps ----------------------------------------------------------------------------

/// The first failing world of `known` (seeds found to fail when this test was written), or,
/// should the world have changed so that none of them fails any more, of the first
/// `SEED_COUNT_MAX` seeds. Panics if no seed fails at all.
fn first_failure(scenario: &dyn Scenario, options_for_seed: impl Fn(u64) -> Options, known: Range<u64>) -> Outcome {
    sweep_until_failure(scenario, &options_for_seed, known.clone())
        .or_else(|| sweep_until_failure(scenario, &options_for_seed, 0..SEED_COUNT_MAX))
        .unwrap_or_else(|| panic!("{}: no seed of {known:?} nor of 0..{SEED_COUNT_MAX} failed", scenario.name()))
}

/// Asserts the first failing world of `known` (see `first_failure`) failed `check`, and
/// returns its message.
fn assert_first_failure(
    scenario: &dyn Scenario,
    options_for_seed: impl Fn(u64) -> Options,
    known: Range<u64>,
    check: &str,
) -> String {
    let outcome = first_failure(scenario, options_for_seed, known);
    let failure = outcome.failure.expect("only failed worlds are returned");
    assert_eq!(
        failure.check,
        check,
        "{} seed {} failed another check than {check}: {}",
        scenario.name(),
        outcome.seed,
        failure.message
    );
    failure.message
}

fn store(wrap: fn(Store) -> Box<dyn StoreProtocol>) -> StoreFactory {
    Arc::new(wrap)
}

// ---- one broken world per check -----------------------------------------------------------

#[test]
fn store_starting_a_second_run_on_a_retried_start_fails_starts_exactly_once_check() {
    // Seed 0 fails: any dropped or duplicated start request does it.
    let factory = store(|s| Box::new(StartNotIdempotent(s)));
    let message = assert_first_failure(
        scenario("hello_llm").as_ref(),
        |seed| with_store(seed, factory.clone()),
        0..10,
        "check_starts_exactly_once",
    );
    assert!(message.contains("workflow hello-") && message.contains("started twice"), "{message}");
}

#[test]
fn store_replying_before_sync_fails_starts_exactly_once_check() {
    // A crash right after a start's write loses the run whose start was already acknowledged.
    // Seed 26 is the first of 0.. that fails.
    let factory = store(|s| Box::new(RepliesBeforeSync(s)));
    let message = assert_first_failure(
        scenario("human_approval").as_ref(),
        |seed| with_store(seed, factory.clone()),
        20..30,
        "check_starts_exactly_once",
    );
    assert!(message.contains("start acknowledged but no run exists"), "{message}");
}

#[test]
fn store_acknowledging_signals_before_they_are_recorded_fails_signals_recorded_once_check() {
    // A human answers twice; the second answer is acknowledged from the inbox while the run
    // publishes, and the run closes on the first one without ever recording it. That window
    // is narrow: seed 3456 is the first of 0.. that fails.
    let factory = store(|s| Box::new(SignalAckedEarly(s)));
    let message = assert_first_failure(
        scenario("human_approval").as_ref(),
        |seed| with_store(seed, factory.clone()),
        3450..3460,
        "check_signals_recorded_once",
    );
    assert!(message.contains("approval-") && message.contains("in no history"), "{message}");
}

#[test]
fn store_ignoring_activity_fencing_tokens_fails_activity_results_recorded_once_check() {
    // Seed 17 is the first of 0.. that fails: it needs a worker that stalls past its lease
    // while another worker takes the attempt over.
    let factory = store(|s| Box::new(ActivityTokenIgnored(s)));
    let message = assert_first_failure(
        scenario("hello_llm").as_ref(),
        |seed| with_store(seed, factory.clone()),
        15..25,
        "check_activity_results_recorded_once",
    );
    assert!(message.contains("activity seq") && message.contains("never held that attempt"), "{message}");
}

#[test]
fn limiter_ignoring_limits_fails_rate_limits_held_check() {
    // Seed 44 is the first of 0.. that fails: it needs a tight drawn quota and a busy minute.
    let limiter: LimiterFactory =
        Arc::new(|_: BTreeMap<String, Limit>, _: Option<Time>| Box::new(Unlimited) as Box<dyn DispatchLimiter>);
    let message = assert_first_failure(
        scenario("agent_loop").as_ref(),
        |seed| Options { limiter_factory: Some(limiter.clone()), ..Options::swarm(seed) },
        40..50,
        "check_rate_limits_held",
    );
    assert!(message.contains("worker-") && message.contains("over its limit"), "{message}");
}

#[test]
fn tool_called_without_idempotency_key_fails_tool_effects_once_check() {
    // Seed 0 fails: a tool that fails after applying its effect, then a retry.
    let message = assert_first_failure(&NoteTaker { keyed: false }, Options::swarm, 0..10, "check_tool_effects_once");
    assert!(message.contains("note:note_taker-") && message.contains("a second time"), "{message}");
}

#[test]
fn tool_called_with_idempotency_key_passes_the_seeds_its_unkeyed_twin_fails() {
    assert!(sweep_until_failure(&NoteTaker { keyed: true }, Options::swarm, 0..10).is_none());
}

#[test]
fn workflow_branching_on_global_state_fails_replay_reproduces_check() {
    // Seed 0 fails: every replay, by a worker or by the final check, flips the coin again.
    let message =
        assert_first_failure(&CoinFlip { reads_global_state: true }, Options::swarm, 0..10, "check_replay_reproduces");
    assert!(message.contains("run r") && message.contains("diverges"), "{message}");
}

#[test]
fn workflow_taking_one_path_passes_the_seeds_its_coin_flipping_twin_fails() {
    assert!(sweep_until_failure(&CoinFlip { reads_global_state: false }, Options::swarm, 0..10).is_none());
}

#[test]
fn store_firing_timers_a_thousand_times_late_fails_liveness_after_heal_check() {
    // Seed 0 fails: a rejected draft waits on the three-day timer for an answer that is not
    // coming.
    let factory = store(|s| Box::new(TimersLate(s)));
    let message = assert_first_failure(
        scenario("human_approval").as_ref(),
        |seed| with_store(seed, factory.clone()),
        0..10,
        "check_liveness_after_heal",
    );
    assert!(message.contains("still open") && message.contains("approval-"), "{message}");
}

#[test]
fn store_stamping_activity_results_with_a_lagging_clock_fails_histories_well_formed_check() {
    // Seed 0 fails: the first activity result lands before the event that scheduled it.
    let factory = store(|s| Box::new(ClockBehind(s)));
    let message = assert_first_failure(
        scenario("hello_llm").as_ref(),
        |seed| with_store(seed, factory.clone()),
        0..10,
        "check_histories_well_formed",
    );
    assert!(message.starts_with("run r") && message.contains("goes back before"), "{message}");
}

#[test]
fn store_appending_stale_workflow_completions_fails_histories_well_formed_check() {
    // The store's own assertion on the append names the invariant it guards, so the world
    // reports the check. Seed 0 fails.
    let factory = store(|s| Box::new(WorkflowTokenIgnored(s)));
    let message = assert_first_failure(
        scenario("hello_llm").as_ref(),
        |seed| with_store(seed, factory.clone()),
        0..10,
        "check_histories_well_formed",
    );
    assert!(message.contains("inbox inputs") || message.contains("rejected by the run state"), "{message}");
}

/// A finished run of `hello_llm` that records its ending twice.
fn history_with_two_endings() -> tempest_engine::History {
    let kinds = [
        Kind::WorkflowStarted {
            workflow_type: "hello_llm".to_owned(),
            workflow_id: "hello-0".to_owned(),
            run_id: "r1".to_owned(),
            input: json!({ "prompt": "p" }).into(),
            parent: None,
            continued_from: None,
        },
        Kind::WorkflowCompleted { output: json!("a").into() },
        Kind::WorkflowCompleted { output: json!("b").into() },
    ];
    let events = kinds.into_iter().zip(0..).map(|(kind, index)| Event { index, time_ms: Time(index), kind }).collect();
    tempest_engine::History::new(events)
}

#[test]
fn history_with_two_endings_fails_runs_complete_exactly_once_check() {
    let failure = check::check_runs_complete_exactly_once(&[history_with_two_endings()]).expect_err("two endings");
    assert_eq!(failure.check, "check_runs_complete_exactly_once");
    assert!(failure.message.contains("run r1 completed 2 times"), "{}", failure.message);
}

#[test]
fn history_with_two_endings_is_reported_as_completed_twice_by_all_checks() {
    // The more specific check runs first: a second ending is also malformed, but "completed
    // twice" says what went wrong.
    let scenario = scenario("hello_llm");
    let store = Store::new(tempest_engine::store::Config::default());
    let failure = check::run_all(scenario.as_ref(), &store, &[history_with_two_endings()], &check::Evidence::default())
        .expect_err("two endings");
    assert_eq!(failure.check, "check_runs_complete_exactly_once");
    assert!(failure.message.contains("run r1 completed 2 times"), "{}", failure.message);
}

// ---- shrinking -----------------------------------------------------------------------------

#[test]
fn explicit_plan_of_a_run_replays_it_exactly() {
    let scenario = scenario("agent_loop");
    for seed in 0..4 {
        let outcome = world::run_catching(scenario.as_ref(), Options::swarm(seed));
        let explicit = Options::swarm(seed).plan.explicit(&outcome.injected);
        let replayed = world::run_catching(scenario.as_ref(), Options { plan: explicit, ..Options::swarm(seed) });
        assert_eq!(replayed.trace_digest, outcome.trace_digest, "seed {seed}");
        assert_eq!(replayed.injected, outcome.injected, "seed {seed}");
    }
}

#[test]
fn failing_seed_of_a_broken_store_shrinks_to_at_most_three_faults_that_still_fail() {
    // The store ignores activity fencing tokens; the bug needs a stalled lease and a takeover,
    // and a swarm seed that shows it injects dozens of unrelated faults besides.
    let factory = store(|s| Box::new(ActivityTokenIgnored(s)));
    let scenario = scenario("hello_llm");
    let outcome = first_failure(scenario.as_ref(), |seed| with_store(seed, factory.clone()), 15..25);
    let check = outcome.failure.clone().expect("failed").check;
    let options = with_store(outcome.seed, factory.clone());
    let shrunk = tempest_sim::shrink_failure(scenario.as_ref(), &options, &outcome, 400)
        .expect("the explicit plan of a failing seed fails the same way");
    let faults = shrunk.plan.fault_count().expect("explicit");
    assert!(faults <= 3, "shrunk from {} to {faults} faults: {}", shrunk.faults_before, shrunk.plan.to_json());
    assert!(shrunk.faults_before > faults, "nothing was removed from {} faults", shrunk.faults_before);
    // The plan as written to a file replays the failure.
    let plan = tempest_sim::FaultPlan::from_json(&shrunk.plan.to_json()).expect("plans round-trip");
    let replayed = world::run_catching(scenario.as_ref(), Options { plan, ..options });
    assert_eq!(replayed.failure.map(|f| f.check), Some(check));
}
