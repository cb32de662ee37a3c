//! Property tests: generated workflows under generated schedules.
//!
//! A workflow here interprets a generated program (activities, sleeps, signal waits with
//! and without a timeout, joins, selects, children, recorded values, continue-as-new). A
//! generated schedule then decides which pending effect the world answers next and how:
//! complete, fail with each failure kind, fire a timer (stale ones too), send a signal
//! (ids repeat), cancel, let time pass, or crash and recover. After every input the live
//! engine must equal one recovered from the histories so far; at the end every run must have
//! closed, and replaying each history must reproduce it batch by batch.

use super::{assert_history_replays, assert_recovers, restart_after};
use crate::activity::{Cause, Failure};
use crate::retry::RetryPolicy;
use crate::testing::Host;
use crate::workflow::{ActivityFuture, Ctx, Registry, WorkflowError, WorkflowResult};
use futures_util::future::{join_all, select, Either};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// One activity call of a program.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Call {
    /// The activity type is `a<type_index>`.
    type_index: u8,
    attempt_count_max: u32,
    start_to_close_ms: Option<u64>,
    schedule_to_close_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Step {
    Activity(Call),
    Sleep {
        duration_ms: u64,
    },
    Signal,
    SignalTimeout {
        timeout_ms: u64,
    },
    Join(Vec<Call>),
    Select(Call, Call),
    Child(Vec<Step>),
    /// Starts a child and does not wait for it.
    Detach(Vec<Step>),
    /// Waits for the first of two children.
    RaceChildren(Vec<Step>, Vec<Step>),
    Patched,
    Random,
    Uuid,
    Now,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Program {
    steps: Vec<Step>,
    /// How many times the run continues as new (with the same steps) before it returns.
    continue_count: u8,
}

/// Starts activity `call` of step `step_index`; `call_index` tells calls of one step apart.
fn start(ctx: &Ctx, call: &Call, step_index: usize, call_index: usize) -> ActivityFuture<Value> {
    let policy = RetryPolicy::attempts(call.attempt_count_max).non_retryable("fatal");
    let mut activity = ctx.activity(&format!("a{}", call.type_index), &json!([step_index, call_index])).retry(policy);
    if let Some(ms) = call.start_to_close_ms {
        activity = activity.start_to_close(Duration::from_millis(ms));
    }
    if let Some(ms) = call.schedule_to_close_ms {
        activity = activity.schedule_to_close(Duration::from_millis(ms));
    }
    activity.start()
}

/// An activity's result as the program logs it; only cancellation ends the run.
fn outcome(result: Result<Value, crate::activity::Error>) -> WorkflowResult<Value> {
    match result {
        Ok(value) => Ok(value),
        Err(error) if error.cause == Cause::Canceled => Err(WorkflowError::Canceled),
        Err(error) => Ok(json!(error.to_string())),
    }
}

fn child_program(steps: &[Step]) -> Program {
    Program { steps: steps.to_vec(), continue_count: 0 }
}

async fn interpret(ctx: Ctx, program: Program) -> WorkflowResult<Vec<Value>> {
    let mut log = Vec::new();
    for (index, step) in program.steps.iter().enumerate() {
        let value = match step {
            Step::Activity(call) => outcome(start(&ctx, call, index, 0).await)?,
            Step::Sleep { duration_ms } => {
                ctx.sleep(Duration::from_millis(*duration_ms)).await?;
                json!("slept")
            }
            Step::Signal => ctx.signal::<Value>("go").await?,
            Step::SignalTimeout { timeout_ms } => {
                json!(ctx.signal_timeout::<Value>("go", Duration::from_millis(*timeout_ms)).await?)
            }
            Step::Join(calls) => {
                let futures = calls.iter().enumerate().map(|(i, call)| start(&ctx, call, index, i));
                let mut values = Vec::new();
                for result in join_all(futures.collect::<Vec<_>>()).await {
                    values.push(outcome(result)?);
                }
                json!(values)
            }
            Step::Select(left, right) => {
                let left = start(&ctx, left, index, 0);
                let right = start(&ctx, right, index, 1);
                match select(left, right).await {
                    Either::Left((result, _)) => json!(["left", outcome(result)?]),
                    Either::Right((result, _)) => json!(["right", outcome(result)?]),
                }
            }
            Step::Child(steps) => match ctx.child::<Vec<Value>>("child", &child_program(steps)).await {
                Ok(log) => json!(log),
                Err(WorkflowError::Canceled) => return Err(WorkflowError::Canceled),
                Err(error) => json!(error.to_string()),
            },
            Step::Detach(steps) => {
                drop(ctx.child::<Value>("child", &child_program(steps)).start());
                json!("detached")
            }
            Step::RaceChildren(left, right) => {
                let left = ctx.child::<Value>("child", &child_program(left)).start();
                let right = ctx.child::<Value>("child", &child_program(right)).start();
                let (side, result) = match select(left, right).await {
                    Either::Left((result, _)) => ("left", result),
                    Either::Right((result, _)) => ("right", result),
                };
                match result {
                    Ok(log) => json!([side, log]),
                    Err(WorkflowError::Canceled) => return Err(WorkflowError::Canceled),
                    Err(error) => json!([side, error.to_string()]),
                }
            }
            Step::Patched => json!(ctx.patched("generated")),
            Step::Random => json!(ctx.random()),
            Step::Uuid => json!(ctx.uuid()),
            Step::Now => json!(ctx.now().as_ms()),
        };
        log.push(value);
    }
    if program.continue_count > 0 {
        return Err(ctx.continue_as_new(&Program { steps: program.steps, continue_count: program.continue_count - 1 }));
    }
    Ok(log)
}

/// What the world does next. `pick` chooses among the pending items of that sort, in the
/// host's (ordered) bookkeeping; with none pending, the action does nothing.
#[derive(Clone, Debug)]
enum Action {
    Complete {
        pick: usize,
    },
    Fail {
        pick: usize,
        failure: Failure,
    },
    Fire {
        pick: usize,
    },
    Signal {
        pick: usize,
        id: u8,
        payload: u8,
    },
    Cancel {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    /// Drops the engine and rebuilds it from the histories; pending work is re-asked.
    Crash,
}

fn call() -> impl Strategy<Value = Call> {
    (0u8..3, 1u32..=3, prop::option::weighted(0.3, 1_000u64..20_000), prop::option::weighted(0.2, 1_000u64..60_000))
        .prop_map(|(type_index, attempt_count_max, start_to_close_ms, schedule_to_close_ms)| Call {
            type_index,
            attempt_count_max,
            start_to_close_ms,
            schedule_to_close_ms,
        })
}

fn leaf_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => call().prop_map(Step::Activity),
        2 => (0u64..100_000).prop_map(|duration_ms| Step::Sleep { duration_ms }),
        2 => Just(Step::Signal),
        2 => (1u64..100_000).prop_map(|timeout_ms| Step::SignalTimeout { timeout_ms }),
        2 => prop::collection::vec(call(), 1..4).prop_map(Step::Join),
        2 => (call(), call()).prop_map(|(left, right)| Step::Select(left, right)),
        1 => Just(Step::Patched),
        1 => Just(Step::Random),
        1 => Just(Step::Uuid),
        1 => Just(Step::Now),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let steps = || prop::collection::vec(leaf_step(), 0..4);
    prop_oneof![
        18 => leaf_step(),
        2 => steps().prop_map(Step::Child),
        1 => steps().prop_map(Step::Detach),
        1 => (steps(), steps()).prop_map(|(left, right)| Step::RaceChildren(left, right)),
    ]
}

fn program() -> impl Strategy<Value = Program> {
    (prop::collection::vec(step(), 0..7), 0u8..3).prop_map(|(steps, continue_count)| Program { steps, continue_count })
}

fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![
        prop::option::of(0u64..5_000).prop_map(|retry_after_ms| Failure::RateLimited { retry_after_ms }),
        prop::option::of(0u64..5_000).prop_map(|retry_after_ms| Failure::Overloaded { retry_after_ms }),
        Just(Failure::TimedOut),
        Just(Failure::InvalidOutput { message: "expected a JSON object".into() }),
        Just(Failure::Refused { message: "content policy".into() }),
        Just(Failure::Application { kind: "tool_error".into(), message: "exit 1".into() }),
        Just(Failure::Application { kind: "fatal".into(), message: "disk full".into() }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => any::<usize>().prop_map(|pick| Action::Complete { pick }),
        8 => (any::<usize>(), failure()).prop_map(|(pick, failure)| Action::Fail { pick, failure }),
        6 => any::<usize>().prop_map(|pick| Action::Fire { pick }),
        6 => (any::<usize>(), 0u8..6, any::<u8>())
            .prop_map(|(pick, id, payload)| Action::Signal { pick, id, payload }),
        1 => any::<usize>().prop_map(|pick| Action::Cancel { pick }),
        2 => (0u64..10_000).prop_map(|ms| Action::Advance { ms }),
        2 => Just(Action::Crash),
    ]
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("program", interpret).register("child", interpret);
    registry
}

/// Workflow ids with an open latest run, in order.
fn open_workflow_ids(host: &Host) -> Vec<String> {
    let ids: BTreeSet<String> = host
        .engine
        .run_ids()
        .map(|run_id| host.engine.run_state(run_id).expect("known run"))
        .filter(|state| !state.is_closed())
        .map(|state| state.workflow_id.clone())
        .collect();
    ids.into_iter().collect()
}

fn pick<T: Clone>(items: impl Iterator<Item = T>, pick: usize) -> Option<T> {
    let items: Vec<T> = items.collect();
    (!items.is_empty()).then(|| items[pick % items.len()].clone())
}

/// Carries out one action; returns whether it fed the engine an input or rebuilt it.
fn perform(host: &mut Host, action: &Action) -> bool {
    match action {
        Action::Complete { pick: p } => match pick(host.activities.values().cloned(), *p) {
            Some(task) => {
                let output = json!(format!("{}#{}", task.activity_type, task.attempt));
                host.complete(&task, output);
                true
            }
            None => false,
        },
        Action::Fail { pick: p, failure } => match pick(host.activities.values().cloned(), *p) {
            Some(task) => {
                host.fail(&task, failure.clone());
                true
            }
            None => false,
        },
        Action::Fire { pick: p } => match pick(host.timers.keys().cloned(), *p) {
            Some((run_id, timer)) => {
                host.fire(&run_id, timer);
                true
            }
            None => false,
        },
        Action::Signal { pick: p, id, payload } => match pick(open_workflow_ids(host).into_iter(), *p) {
            Some(workflow_id) => {
                host.signal(&workflow_id, &format!("s{id}"), "go", json!(payload));
                true
            }
            None => false,
        },
        Action::Cancel { pick: p } => match pick(open_workflow_ids(host).into_iter(), *p) {
            Some(workflow_id) => {
                host.cancel(&workflow_id, "generated");
                true
            }
            None => false,
        },
        Action::Advance { ms } => {
            host.advance(*ms);
            false
        }
        Action::Crash => {
            let (engine, effects) = assert_recovers(host);
            host.engine = engine;
            host.activities.clear();
            host.timers.clear();
            host.perform(effects);
            true
        }
    }
}

/// Answers everything until every run has closed: the liveness half of the property.
fn drain(host: &mut Host) {
    for round in 0..1_000 {
        let open = open_workflow_ids(host);
        if open.is_empty() {
            return;
        }
        if let Some(task) = host.activities.values().next().cloned() {
            host.complete(&task, json!("drained"));
        } else if !host.timers.is_empty() {
            host.fire_next_timer();
        } else {
            for workflow_id in open {
                host.signal(&workflow_id, &format!("drain-{round}"), "go", json!(round));
            }
        }
        assert_recovers(host);
    }
    panic!("runs still open after draining: {:?}", open_workflow_ids(host));
}

fn check(program: Program, schedule: Vec<Action>) {
    let mut host = Host::new(registry());
    host.start("program", "wf-1", json!(program));
    assert_recovers(&host);
    for action in &schedule {
        if perform(&mut host, action) {
            assert_recovers(&host);
        }
    }
    drain(&mut host);

    let run_ids: Vec<String> = host.engine.run_ids().map(str::to_owned).collect();
    let closed: BTreeSet<&String> = host.closed.iter().collect();
    assert_eq!(host.closed.len(), closed.len(), "a run closed twice");
    assert_eq!(closed, run_ids.iter().collect(), "every run closed once");
    for run_id in &run_ids {
        let events = host.events(run_id);
        // Generated programs never choose child ids, so a default id must never collide.
        let rendered = crate::history::render(&events);
        assert!(!rendered.contains("id in use"), "{rendered}");
        assert_eq!(&events, &host.appended[run_id], "run {run_id}: appended");
        assert_history_replays(host.engine.registry(), &events);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    })]

    /// Replaying the produced histories reproduces them, and the state rebuilt from the
    /// histories after any input equals the live state, pending work included.
    #[test]
    fn generated_runs_replay_and_recover_from_every_prefix(
        program in program(),
        schedule in prop::collection::vec(action(), 0..60),
    ) {
        check(program, schedule);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    /// A crash between any two appends, even inside one input's step, loses no run: the
    /// recovered engine finishes every step that spans runs and every run still closes.
    #[test]
    fn crash_inside_a_step_recovers_and_every_run_finishes(
        program in program(),
        schedule in prop::collection::vec(action(), 0..30),
        cut in any::<usize>(),
    ) {
        check_crash_inside_step(program, schedule, cut);
    }
}

/// Runs `schedule`, then crashes as if the disk kept only the first `cut` appends (in the
/// order they were made durable, so possibly inside one input's step), recovers and drains.
fn check_crash_inside_step(program: Program, schedule: Vec<Action>, cut: usize) {
    let mut host = Host::new(registry());
    host.start("program", "wf-1", json!(program));
    for action in &schedule {
        perform(&mut host, action);
    }
    let cut = cut % (host.appended_log.len() + 1);
    let mut restarted = restart_after(&host, cut);
    drain(&mut restarted);
    for run_id in restarted.engine.run_ids() {
        assert_history_replays(restarted.engine.registry(), &restarted.events(run_id));
    }
}

#[test]
fn crash_between_every_input_changes_nothing() {
    // A fixed program touching every step kind, with a crash after every input.
    let call = |type_index| Call {
        type_index,
        attempt_count_max: 2,
        start_to_close_ms: Some(5_000),
        schedule_to_close_ms: None,
    };
    let program = Program {
        steps: vec![
            Step::Random,
            Step::Activity(call(0)),
            Step::Join(vec![call(1), call(2)]),
            Step::Select(call(0), call(1)),
            Step::SignalTimeout { timeout_ms: 1_000 },
            Step::Child(vec![Step::Uuid, Step::Sleep { duration_ms: 10 }]),
            Step::Signal,
            Step::Now,
        ],
        continue_count: 1,
    };
    let mut schedule = Vec::new();
    for pick in 0..30 {
        schedule.push(Action::Fail { pick, failure: Failure::TimedOut });
        schedule.push(Action::Crash);
        schedule.push(Action::Complete { pick });
        schedule.push(Action::Crash);
        schedule.push(Action::Fire { pick });
        schedule.push(Action::Crash);
        schedule.push(Action::Signal { pick, id: 0, payload: 1 });
    }
    check(program, schedule);
}
