//! `tempest bench sim`: how fast the simulator runs worlds, and what a world of waiting runs costs.
//!
//! Four measurements, each of whole worlds through `tempest_sim::world::run_catching`, exactly as
//! `sweep` runs them:
//!
//! - Seeds per second: `agent_loop` worlds under their swarm fault plans, seeds counted up
//!   from 0, first on one thread, then the same seeds on one thread per core. Events per
//!   second is the worlds' summed `step_count` over the wall time. The baseline, measured in
//!   the same run: replaying the final histories of the same seeds with the workflow code
//!   (the end-of-world replay check alone, which is one pass of the workflow code over each
//!   run). `world_over_replay` says how many such passes a whole world costs; the world runs
//!   the code at least twice (live, then the check), plus replays after cache misses, the
//!   activities, the store, the network and the other checks.
//! - Long waits: `human_approval` worlds under swarm faults, whose runs wait minutes to days
//!   for humans, on one thread; simulated seconds per wall second.
//! - Waiting runs: one fault-free world whose workload starts N runs that each wait for a
//!   signal that never comes, and, a simulated day later, one probe run whose tool call reads
//!   the resident set (`/proc/self/statm`) from inside the world while it still holds every
//!   run. The growth since before the world was built is the cost of the whole world (store,
//!   disk, agenda, workers, evidence), allocator overhead included. It is measured first, in
//!   a heap no earlier world has grown, so freed memory cannot hide it.
//! - Time skipping: Temporal's test-server case, a workflow that sleeps an hour and then runs
//!   an activity that fails twice and succeeds on its third attempt (retries after 10 s and
//!   20 s), in fault-free worlds of one workflow each and in one world of many; wall time per
//!   workflow. The worlds of one are timed in equal batches and the figure is the median
//!   batch's: on a shared machine a burst of someone else's work lands in one batch and would
//!   otherwise move the whole figure. Every batch's figure is in the JSON, so the spread shows.
//!
//! It never changes what a world does and never reaches into the simulator's internals: the
//! bench's own workloads are ordinary `Scenario`s.

use crate::bench::{grouped, resident_bytes};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempest_engine::history::{History, Kind};
use tempest_engine::services::{Activities, ActivityCtx, LlmRequest, LlmResponse};
use tempest_engine::{Ctx, Failure, Registry, RetryPolicy, Time, WorkflowResult};
use tempest_sim::rng::Rng;
use tempest_sim::scenario::{Start, ToolOutcome};
use tempest_sim::world::{run_catching, Options};
use tempest_sim::{FaultPlan, Scenario};

const SEEDS_PER_SECOND_PER_CORE_GOAL: f64 = 2_000.0;
const SIMULATED_SECONDS_PER_WALL_SECOND_GOAL: f64 = 1e7;
const WAITING_RUNS_BYTES_GOAL: u64 = 1 << 30;
/// The run count the waiting-runs goal is stated for.
const WAITING_RUN_COUNT_GOAL: usize = 100_000;
/// The run count measured by default: the goal's own, measured, not extrapolated (the store
/// looks only at runs that can make progress, so idle runs cost nothing per operation).
const WAITING_RUN_COUNT_DEFAULT: usize = WAITING_RUN_COUNT_GOAL;
const TIME_SKIP_MS_PER_WORKFLOW_GOAL: f64 = 0.05;
/// Batches the worlds of one time-skip workflow are timed in.
const TIME_SKIP_BATCH_COUNT: usize = 10;

const DAY_MS: u64 = 86_400_000;
/// When the waiting-runs probe starts: long after every waiting run's first workflow task.
const PROBE_AT: Time = Time(DAY_MS);

pub(crate) struct Config {
    /// `agent_loop` seeds run on one core, then again on all cores.
    pub(crate) seed_count: u64,
    /// `human_approval` seeds of the long-wait measurement.
    pub(crate) long_wait_seed_count: u64,
    pub(crate) waiting_run_count: usize,
    /// Worlds of one time-skip workflow each.
    pub(crate) time_skip_world_count: usize,
    /// Time-skip workflows in the one shared world.
    pub(crate) time_skip_shared_workflow_count: usize,
    /// Threads of the all-cores measurement.
    pub(crate) jobs: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed_count: 1_000,
            long_wait_seed_count: 300,
            waiting_run_count: WAITING_RUN_COUNT_DEFAULT,
            time_skip_world_count: 2_000,
            time_skip_shared_workflow_count: 200,
            jobs: crate::core_count() as usize,
        }
    }
}

/// What went wrong with the bench's own worlds: a bench that cannot vouch for its workload
/// reports no figures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("bench world {scenario} seed {seed} failed {check}: {message}")]
    WorldFailed { scenario: &'static str, seed: u64, check: String, message: String },
    #[error("bench world {scenario}: {detail}")]
    Workload { scenario: &'static str, detail: String },
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `release` or `debug`: debug figures are not representative.
    build: &'static str,
    scenario: &'static str,
    seed_count: u64,
    jobs: usize,
    /// Seeds whose world failed a check, over both runs; their worlds still count.
    seeds_failed: u64,
    /// Mean world size, to tell a slow simulator from a big world.
    workflows_per_seed_mean: f64,
    /// Activities each run scheduled (in its final history), not counting retries; the goal
    /// describes a world of about ten runs of about ten.
    activities_per_workflow_mean: f64,
    events_per_seed_mean: f64,
    one_core_seconds: f64,
    seeds_per_second_per_core: f64,
    seeds_per_second_per_core_goal: f64,
    events_per_second_per_core: f64,
    /// One core replaying every final history of the same seeds (not counting how long the
    /// worlds took to make them).
    replay_seconds: f64,
    replay_seeds_per_second_per_core: f64,
    /// `one_core_seconds` over `replay_seconds`.
    world_over_replay: f64,
    all_cores_seconds: f64,
    seeds_per_second: f64,
    /// Summed `step_count` of the all-cores run over its wall time.
    events_per_second: f64,
    long_wait_scenario: &'static str,
    long_wait_seed_count: u64,
    long_wait_simulated_days_per_seed_mean: f64,
    long_wait_seconds: f64,
    /// On one core.
    simulated_seconds_per_wall_second: f64,
    simulated_seconds_per_wall_second_goal: f64,
    /// Runs in the measured world.
    waiting_run_count: usize,
    /// Resident-set growth of the world holding `waiting_run_count` waiting runs; `null` where
    /// `/proc/self/statm` cannot be read.
    waiting_runs_bytes_measured: Option<u64>,
    bytes_per_waiting_run: Option<f64>,
    /// The same for 100,000 runs: measured if `waiting_run_count` is 100,000, else
    /// `bytes_per_waiting_run` times 100,000.
    waiting_runs_bytes: Option<u64>,
    waiting_runs_bytes_extrapolated: bool,
    waiting_runs_bytes_goal: u64,
    /// Wall time from building the world to the probe: starting the runs and a simulated day
    /// of idle polls.
    waiting_runs_start_seconds: f64,
    /// Wall time of the whole world, the end-of-world checks included.
    waiting_runs_world_seconds: f64,
    time_skip_world_count: usize,
    /// Events (agenda steps) of one such world.
    time_skip_events_per_world_mean: f64,
    /// Worlds of one workflow each, world setup and end-of-world checks included: the median
    /// of the batches' figures.
    time_skip_ms_per_workflow: f64,
    /// Every batch's figure, in the order they ran.
    time_skip_ms_per_workflow_batches: Vec<f64>,
    /// Over all the worlds of one at once (every batch's time summed).
    time_skip_ms_per_workflow_mean: f64,
    time_skip_ms_per_workflow_goal: f64,
    time_skip_shared_workflow_count: usize,
    /// The same workflows, all in one world.
    time_skip_shared_ms_per_workflow: f64,
}

/// Runs every measurement, memory first.
pub(crate) fn run(config: &Config) -> Result<Report, Error> {
    let waiting = measure_waiting_runs(config.waiting_run_count)?;

    let agent_loop = tempest_scenarios::find("agent_loop").expect("agent_loop is a built-in scenario");
    let one_core = run_seeds(agent_loop.as_ref(), config.seed_count, 1);
    let replay = measure_replay(agent_loop.as_ref(), config.seed_count)?;
    let all_cores = run_seeds(agent_loop.as_ref(), config.seed_count, config.jobs);

    let human_approval = tempest_scenarios::find("human_approval").expect("human_approval is a built-in scenario");
    let long_wait = run_seeds(human_approval.as_ref(), config.long_wait_seed_count, 1);

    let time_skip_batches = measure_time_skip(config.time_skip_world_count, 1, TIME_SKIP_BATCH_COUNT)?;
    let time_skip_shared = measure_time_skip(1, config.time_skip_shared_workflow_count, 1)?;
    let time_skip = time_skip_batches.iter().fold(SeedRun::default(), |mut total, batch| {
        total.wall += batch.wall;
        total.step_count += batch.step_count;
        total
    });
    let time_skip_ms_per_workflow_batches: Vec<f64> = time_skip_batches
        .iter()
        .map(|batch| batch.wall.as_secs_f64() * 1e3 / batch.workflow_count.max(1) as f64)
        .collect();

    let per_second = |count: f64, wall: Duration| count / wall.as_secs_f64().max(1e-9);
    Ok(Report {
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        scenario: agent_loop.name(),
        seed_count: config.seed_count,
        jobs: config.jobs,
        seeds_failed: one_core.failed_count + all_cores.failed_count,
        workflows_per_seed_mean: one_core.workflow_count as f64 / config.seed_count as f64,
        activities_per_workflow_mean: replay.activity_count as f64 / replay.history_count.max(1) as f64,
        events_per_seed_mean: one_core.step_count as f64 / config.seed_count as f64,
        one_core_seconds: one_core.wall.as_secs_f64(),
        seeds_per_second_per_core: per_second(config.seed_count as f64, one_core.wall),
        seeds_per_second_per_core_goal: SEEDS_PER_SECOND_PER_CORE_GOAL,
        events_per_second_per_core: per_second(one_core.step_count as f64, one_core.wall),
        replay_seconds: replay.wall.as_secs_f64(),
        replay_seeds_per_second_per_core: per_second(config.seed_count as f64, replay.wall),
        world_over_replay: one_core.wall.as_secs_f64() / replay.wall.as_secs_f64().max(1e-9),
        all_cores_seconds: all_cores.wall.as_secs_f64(),
        seeds_per_second: per_second(config.seed_count as f64, all_cores.wall),
        events_per_second: per_second(all_cores.step_count as f64, all_cores.wall),
        long_wait_scenario: human_approval.name(),
        long_wait_seed_count: config.long_wait_seed_count,
        long_wait_simulated_days_per_seed_mean: long_wait.simulated_ms as f64
            / DAY_MS as f64
            / config.long_wait_seed_count as f64,
        long_wait_seconds: long_wait.wall.as_secs_f64(),
        simulated_seconds_per_wall_second: per_second(long_wait.simulated_ms as f64 / 1e3, long_wait.wall),
        simulated_seconds_per_wall_second_goal: SIMULATED_SECONDS_PER_WALL_SECOND_GOAL,
        waiting_run_count: config.waiting_run_count,
        waiting_runs_bytes_measured: waiting.bytes,
        bytes_per_waiting_run: waiting.bytes.map(|b| b as f64 / config.waiting_run_count as f64),
        waiting_runs_bytes: waiting
            .bytes
            .map(|b| (b as f64 / config.waiting_run_count as f64 * WAITING_RUN_COUNT_GOAL as f64).round() as u64),
        waiting_runs_bytes_extrapolated: config.waiting_run_count != WAITING_RUN_COUNT_GOAL,
        waiting_runs_bytes_goal: WAITING_RUNS_BYTES_GOAL,
        waiting_runs_start_seconds: waiting.start_wall.as_secs_f64(),
        waiting_runs_world_seconds: waiting.world_wall.as_secs_f64(),
        time_skip_world_count: config.time_skip_world_count,
        time_skip_events_per_world_mean: time_skip.step_count as f64 / config.time_skip_world_count as f64,
        time_skip_ms_per_workflow: median(&time_skip_ms_per_workflow_batches),
        time_skip_ms_per_workflow_mean: time_skip.wall.as_secs_f64() * 1e3 / config.time_skip_world_count as f64,
        time_skip_ms_per_workflow_batches,
        time_skip_ms_per_workflow_goal: TIME_SKIP_MS_PER_WORKFLOW_GOAL,
        time_skip_shared_workflow_count: config.time_skip_shared_workflow_count,
        time_skip_shared_ms_per_workflow: time_skip_shared.iter().map(|run| run.wall).sum::<Duration>().as_secs_f64()
            * 1e3
            / config.time_skip_shared_workflow_count as f64,
    })
}

impl Report {
    pub(crate) fn write_summary(&self, out: &mut impl Write) -> io::Result<()> {
        let verdict = |met: bool| if met { "goal met" } else { "GOAL MISSED" };
        writeln!(out, "tempest bench sim ({} build)", self.build)?;
        if self.build == "debug" {
            writeln!(out, "  note: a debug build; run `cargo run --release -- bench sim` for real figures")?;
        }
        writeln!(
            out,
            "{} with swarm faults: {} seeds, {:.1} workflows of {:.1} activities and {:.0} events per seed{}",
            self.scenario,
            grouped(self.seed_count),
            self.workflows_per_seed_mean,
            self.activities_per_workflow_mean,
            self.events_per_seed_mean,
            if self.seeds_failed > 0 { format!(", {} seeds FAILED a check", self.seeds_failed) } else { String::new() },
        )?;
        writeln!(
            out,
            "  one core:  {:.2} s = {:.0} seeds/s ({}: >= {:.0}), {} events/s",
            self.one_core_seconds,
            self.seeds_per_second_per_core,
            verdict(self.seeds_per_second_per_core >= self.seeds_per_second_per_core_goal),
            self.seeds_per_second_per_core_goal,
            grouped(self.events_per_second_per_core as u64),
        )?;
        writeln!(
            out,
            "  baseline: replaying the same seeds' final histories takes {:.2} s = {:.0} seeds/s on one core; a world costs {:.1} such replays",
            self.replay_seconds, self.replay_seeds_per_second_per_core, self.world_over_replay,
        )?;
        writeln!(
            out,
            "  {} cores: {:.2} s = {:.0} seeds/s, {} events/s",
            self.jobs,
            self.all_cores_seconds,
            self.seeds_per_second,
            grouped(self.events_per_second as u64),
        )?;
        writeln!(
            out,
            "long waits: {} with swarm faults, {} seeds of {:.1} simulated days each, one core: {:.2} s = {:.2e} simulated s per wall s ({}: >= {:.0e})",
            self.long_wait_scenario,
            grouped(self.long_wait_seed_count),
            self.long_wait_simulated_days_per_seed_mean,
            self.long_wait_seconds,
            self.simulated_seconds_per_wall_second,
            verdict(self.simulated_seconds_per_wall_second >= self.simulated_seconds_per_wall_second_goal),
            self.simulated_seconds_per_wall_second_goal,
        )?;
        match (self.waiting_runs_bytes_measured, self.bytes_per_waiting_run, self.waiting_runs_bytes) {
            (Some(bytes), Some(per_run), Some(for_goal)) => {
                let extrapolated = if self.waiting_runs_bytes_extrapolated { ", extrapolated" } else { "" };
                writeln!(
                    out,
                    "waiting runs: a world of {} runs waiting on signals holds {:.1} MiB = {per_run:.0} bytes/run; {} runs: {:.1} MiB ({}{extrapolated}: <= {:.0} MiB); starting them took {:.2} s, the whole world {:.2} s",
                    grouped(self.waiting_run_count as u64),
                    bytes as f64 / f64::from(1 << 20),
                    grouped(WAITING_RUN_COUNT_GOAL as u64),
                    for_goal as f64 / f64::from(1 << 20),
                    verdict(for_goal <= self.waiting_runs_bytes_goal),
                    self.waiting_runs_bytes_goal as f64 / f64::from(1 << 20),
                    self.waiting_runs_start_seconds,
                    self.waiting_runs_world_seconds,
                )?;
            }
            _ => writeln!(out, "waiting runs: not measured: /proc/self/statm is not readable here")?,
        }
        writeln!(
            out,
            "time skipping: sleep 1 h, then an activity failing twice (retries after 10 s, 20 s): {:.3} ms per workflow in {} worlds of one (median of {} batches, {:.3} to {:.3}; {:.0} events each; {}: <= {}); {:.3} ms per workflow in one world of {}",
            self.time_skip_ms_per_workflow,
            grouped(self.time_skip_world_count as u64),
            self.time_skip_ms_per_workflow_batches.len(),
            self.time_skip_ms_per_workflow_batches.iter().copied().fold(f64::INFINITY, f64::min),
            self.time_skip_ms_per_workflow_batches.iter().copied().fold(0.0, f64::max),
            self.time_skip_events_per_world_mean,
            verdict(self.time_skip_ms_per_workflow <= self.time_skip_ms_per_workflow_goal),
            self.time_skip_ms_per_workflow_goal,
            self.time_skip_shared_ms_per_workflow,
            grouped(self.time_skip_shared_workflow_count as u64),
        )?;
        Ok(())
    }
}

// ---- seeds per second ---------------------------------------------------------------------

/// What a batch of seeds added up to.
#[derive(Debug, Default)]
struct SeedRun {
    wall: Duration,
    step_count: u64,
    simulated_ms: u64,
    /// Workflows whose start the world accepted.
    workflow_count: u64,
    failed_count: u64,
}

/// Runs seeds `0..seed_count` of `scenario` under swarm faults on `jobs` threads.
fn run_seeds(scenario: &dyn Scenario, seed_count: u64, jobs: usize) -> SeedRun {
    let next = AtomicU64::new(0);
    let total = Mutex::new(SeedRun::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let mut sum = SeedRun::default();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seed_count {
                        break;
                    }
                    let outcome = run_catching(scenario, Options::swarm(seed));
                    sum.step_count += outcome.step_count;
                    sum.simulated_ms += outcome.simulated_ms;
                    sum.workflow_count += outcome.workflows_accepted;
                    sum.failed_count += u64::from(!outcome.passed());
                }
                let mut total = total.lock().expect("no bench thread panics holding the total");
                total.step_count += sum.step_count;
                total.simulated_ms += sum.simulated_ms;
                total.workflow_count += sum.workflow_count;
                total.failed_count += sum.failed_count;
            });
        }
    });
    let mut total = total.into_inner().expect("no bench thread panicked");
    total.wall = started.elapsed();
    total
}

/// The replay baseline: what replaying the final histories cost, and what they hold.
struct Replay {
    wall: Duration,
    history_count: usize,
    /// `activity_scheduled` events over all the histories.
    activity_count: usize,
}

/// Wall time of replaying, with the workflow code, every final history of seeds
/// `0..seed_count` of `scenario` under swarm faults (made first, untimed).
fn measure_replay(scenario: &dyn Scenario, seed_count: u64) -> Result<Replay, Error> {
    let histories: Vec<History> = (0..seed_count)
        .flat_map(|seed| run_catching(scenario, Options { keep_histories: true, ..Options::swarm(seed) }).histories)
        .collect();
    let registry = scenario.registry();
    let started = Instant::now();
    for history in &histories {
        tempest_sim::check::replay_reproduces(&registry, history)
            .map_err(|detail| Error::Workload { scenario: scenario.name(), detail })?;
    }
    let wall = started.elapsed();
    let activity_count = histories
        .iter()
        .flat_map(|history| &history.events)
        .filter(|event| matches!(event.kind, Kind::ActivityScheduled { .. }))
        .count();
    Ok(Replay { wall, history_count: histories.len(), activity_count })
}

// ---- waiting runs -------------------------------------------------------------------------

/// The tool the probe run calls; the bench scenario answers it by reading the resident set.
const PROBE_TOOL: &str = "probe";

/// A run that waits for one signal, as a run waiting for a human does.
async fn wait_signal(ctx: Ctx, _input: Value) -> WorkflowResult<Value> {
    ctx.signal("go").await
}

/// A run whose only activity calls the probe tool.
async fn probe(ctx: Ctx, _input: Value) -> WorkflowResult<Value> {
    let output: Value = ctx.activity("probe", &Value::Null).retry(RetryPolicy::attempts(1)).await?;
    Ok(output)
}

async fn probe_activity(ctx: ActivityCtx, _input: Value) -> Result<Value, Failure> {
    ctx.tool(PROBE_TOOL, Value::Null).await
}

/// `run_count` runs waiting on a signal that never comes, and a probe run a day later.
struct WaitingRuns {
    run_count: usize,
    /// Resident bytes the probe read, 0 until it ran (or where they cannot be read).
    probed_bytes: AtomicU64,
    /// When the probe ran, on the real clock.
    probed_at: Mutex<Option<Instant>>,
}

impl Scenario for WaitingRuns {
    fn name(&self) -> &'static str {
        "bench_waiting_runs"
    }

    fn description(&self) -> &'static str {
        "runs that wait on a signal that never comes, and a probe run that reads the resident set"
    }

    fn registry(&self) -> Registry {
        let mut registry = Registry::new();
        registry.register("bench_wait_signal", wait_signal).register("bench_probe", probe);
        registry
    }

    fn activities(&self) -> Activities {
        let mut activities = Activities::new();
        activities.register("probe", probe_activity);
        activities
    }

    fn workload(&self, _rng: &mut Rng) -> Vec<Start> {
        let start = |at: Time, workflow_id: String, workflow_type: &str| Start {
            at,
            workflow_id,
            workflow_type: workflow_type.to_owned(),
            input: Value::Null,
        };
        let mut starts: Vec<Start> = (0..self.run_count)
            .map(|index| start(Time::ZERO, format!("wait-{index:07}"), "bench_wait_signal"))
            .collect();
        starts.push(start(PROBE_AT, "probe".to_owned(), "bench_probe"));
        starts
    }

    fn llm_answer(&self, request: &LlmRequest, _rng: &mut Rng) -> LlmResponse {
        unreachable_answer(request)
    }

    fn tool_call(&self, name: &str, _arguments: &Value, _rng: &mut Rng) -> ToolOutcome {
        assert_eq!(name, PROBE_TOOL, "the waiting-runs bench calls only its probe tool");
        self.probed_bytes.store(resident_bytes().unwrap_or(0), Ordering::Relaxed);
        *self.probed_at.lock().expect("the probe never panics holding its clock") = Some(Instant::now());
        ToolOutcome { result: Value::Null, effect: None }
    }

    fn liveness_bound(&self) -> Duration {
        // Past the probe: the world then ends on the waiting runs, as planned.
        Duration::from_millis(2 * DAY_MS)
    }
}

fn unreachable_answer(request: &LlmRequest) -> LlmResponse {
    panic!("bench scenarios call no LLM, yet model {} was asked", request.model)
}

struct Waiting {
    bytes: Option<u64>,
    start_wall: Duration,
    world_wall: Duration,
}

fn measure_waiting_runs(run_count: usize) -> Result<Waiting, Error> {
    let scenario = WaitingRuns { run_count, probed_bytes: AtomicU64::new(0), probed_at: Mutex::new(None) };
    let workload_error = |detail: String| Error::Workload { scenario: scenario.name(), detail };
    let options = Options { keep_histories: true, ..Options::with_plan(0, FaultPlan::none()) };
    let before = resident_bytes();
    let started = Instant::now();
    let outcome = run_catching(&scenario, options);
    let world_wall = started.elapsed();
    let probed = scenario.probed_bytes.load(Ordering::Relaxed);
    let probed_at = *scenario.probed_at.lock().expect("the probe never panics holding its clock");
    // The world ends when its liveness bound finds the waiting runs still open, as planned.
    match &outcome.failure {
        Some(failure) if failure.check == "check_liveness_after_heal" => {}
        Some(failure) => {
            return Err(Error::WorldFailed {
                scenario: scenario.name(),
                seed: outcome.seed,
                check: failure.check.clone(),
                message: failure.message.chars().take(500).collect(),
            })
        }
        None => return Err(workload_error("ended with every run closed; its runs were meant to wait".to_owned())),
    }
    let Some(probed_at) = probed_at else {
        return Err(workload_error("the probe run never called its tool".to_owned()));
    };
    let waiting: Vec<&History> = outcome.histories.iter().filter(|h| h.workflow_id != "probe").collect();
    if waiting.len() != run_count {
        return Err(workload_error(format!("{} of {run_count} waiting runs started", waiting.len())));
    }
    for history in waiting {
        let last = history.events.last().expect("a started run has events");
        if last.kind.is_terminal() || last.time_ms >= PROBE_AT {
            return Err(workload_error(format!(
                "run {} was not waiting when the probe ran: its last event is {} at {}",
                history.run_id,
                last.kind.name(),
                last.time_ms
            )));
        }
    }
    Ok(Waiting {
        bytes: before.map(|b| probed.saturating_sub(b)),
        start_wall: probed_at.duration_since(started),
        world_wall,
    })
}

// ---- time skipping ------------------------------------------------------------------------

/// Temporal's time-skipping test case: sleep an hour, then an activity that fails twice.
async fn time_skip(ctx: Ctx, _input: Value) -> WorkflowResult<Value> {
    ctx.sleep(Duration::from_secs(3_600)).await?;
    let policy = RetryPolicy::attempts(3).initial_interval(Duration::from_secs(10)).backoff(2.0);
    let output: Value = ctx.activity("flaky", &Value::Null).retry(policy).await?;
    Ok(output)
}

/// Fails attempts 1 and 2 as a server error would, and succeeds on the third.
async fn flaky(ctx: ActivityCtx, _input: Value) -> Result<Value, Failure> {
    if ctx.attempt() < 3 {
        return Err(Failure::Overloaded { retry_after_ms: None });
    }
    Ok(json!({ "attempt": ctx.attempt() }))
}

struct TimeSkip {
    workflow_count: usize,
}

impl Scenario for TimeSkip {
    fn name(&self) -> &'static str {
        "bench_time_skip"
    }

    fn description(&self) -> &'static str {
        "sleep an hour, then an activity that fails twice and succeeds on the third attempt"
    }

    fn registry(&self) -> Registry {
        let mut registry = Registry::new();
        registry.register("bench_time_skip", time_skip);
        registry
    }

    fn activities(&self) -> Activities {
        let mut activities = Activities::new();
        activities.register("flaky", flaky);
        activities
    }

    fn workload(&self, _rng: &mut Rng) -> Vec<Start> {
        (0..self.workflow_count)
            .map(|index| Start {
                at: Time::ZERO,
                workflow_id: format!("skip-{index}"),
                workflow_type: "bench_time_skip".to_owned(),
                input: Value::Null,
            })
            .collect()
    }

    fn llm_answer(&self, request: &LlmRequest, _rng: &mut Rng) -> LlmResponse {
        unreachable_answer(request)
    }

    fn tool_call(&self, name: &str, _arguments: &Value, _rng: &mut Rng) -> ToolOutcome {
        panic!("the time-skip bench calls no tool, yet {name} was called")
    }

    fn liveness_bound(&self) -> Duration {
        Duration::from_millis(DAY_MS)
    }
}

fn time_skip_options(seed: u64) -> Options {
    Options::with_plan(seed, FaultPlan::none())
}

/// Checks that one history is the case as stated: an hour's timer, then two failed attempts
/// retried after 10 s and 20 s, then success.
fn check_time_skip_history(history: &History) -> Result<(), String> {
    let mut timer_ms = None;
    let mut retry_delays_ms = Vec::new();
    let mut completed = None;
    for event in &history.events {
        match &event.kind {
            Kind::TimerStarted { duration_ms, .. } => timer_ms = Some(*duration_ms),
            Kind::ActivityAttemptFailed { retry_at_ms, .. } => {
                retry_delays_ms.push(retry_at_ms.as_ms() - event.time_ms.as_ms())
            }
            Kind::ActivityCompleted { attempt, .. } => completed = Some(*attempt),
            _ => {}
        }
    }
    let ended = history.events.last().is_some_and(|e| matches!(e.kind, Kind::WorkflowCompleted { .. }));
    if timer_ms != Some(3_600_000) || retry_delays_ms != [10_000, 20_000] || completed != Some(3) || !ended {
        return Err(format!(
            "run {}: timer {timer_ms:?} ms, retries after {retry_delays_ms:?} ms, completed on attempt {completed:?}, workflow completed {ended}",
            history.run_id
        ));
    }
    Ok(())
}

/// Checks the workload once, then runs `world_count` worlds of `workflow_count` time-skip
/// workflows each, seeds counted up from 0, timed in `batch_count` consecutive batches of
/// (nearly) equal size.
fn measure_time_skip(world_count: usize, workflow_count: usize, batch_count: usize) -> Result<Vec<SeedRun>, Error> {
    let scenario = TimeSkip { workflow_count };
    let checked = run_catching(&scenario, Options { keep_histories: true, ..time_skip_options(0) });
    let passed = |outcome: &tempest_sim::Outcome| match &outcome.failure {
        Some(failure) => Err(Error::WorldFailed {
            scenario: scenario.name(),
            seed: outcome.seed,
            check: failure.check.clone(),
            message: failure.message.clone(),
        }),
        None if outcome.runs_completed != workflow_count as u64 => Err(Error::Workload {
            scenario: scenario.name(),
            detail: format!("{} of {workflow_count} runs completed", outcome.runs_completed),
        }),
        None => Ok(()),
    };
    passed(&checked)?;
    for history in &checked.histories {
        check_time_skip_history(history).map_err(|detail| Error::Workload { scenario: scenario.name(), detail })?;
    }
    let batch_count = batch_count.clamp(1, world_count.max(1));
    let mut batches = Vec::with_capacity(batch_count);
    for batch in 0..batch_count {
        let seeds = (world_count * batch / batch_count) as u64..(world_count * (batch + 1) / batch_count) as u64;
        let mut run = SeedRun::default();
        let started = Instant::now();
        for seed in seeds {
            let outcome = run_catching(&scenario, time_skip_options(seed));
            passed(&outcome)?;
            run.step_count += outcome.step_count;
            run.workflow_count += workflow_count as u64;
        }
        run.wall = started.elapsed();
        batches.push(run);
    }
    Ok(batches)
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_skip_workload_is_the_stated_case() {
        let scenario = TimeSkip { workflow_count: 2 };
        let outcome = run_catching(&scenario, Options { keep_histories: true, ..time_skip_options(7) });
        assert!(outcome.passed(), "{:?}", outcome.failure);
        assert_eq!(outcome.histories.len(), 2);
        for history in &outcome.histories {
            check_time_skip_history(history).unwrap();
        }
        assert!(outcome.simulated_ms >= 3_630_000, "{} ms", outcome.simulated_ms);
    }

    #[test]
    fn small_bench_reports_every_figure() {
        let config = Config {
            seed_count: 4,
            long_wait_seed_count: 2,
            waiting_run_count: 20,
            time_skip_world_count: 3,
            time_skip_shared_workflow_count: 3,
            jobs: 2,
        };
        let report = run(&config).unwrap();
        assert!(report.seeds_per_second_per_core > 0.0);
        assert!(report.waiting_runs_bytes.is_some());
        // Every agent_loop run asks the model at least once.
        assert!(report.activities_per_workflow_mean >= 1.0, "{}", report.activities_per_workflow_mean);
        let mut summary = Vec::new();
        report.write_summary(&mut summary).unwrap();
        let summary = String::from_utf8(summary).unwrap();
        assert!(summary.contains("seeds/s"), "{summary}");
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "seeds_per_second_per_core",
            "replay_seeds_per_second_per_core",
            "world_over_replay",
            "seeds_per_second",
            "events_per_second",
            "simulated_seconds_per_wall_second",
            "waiting_runs_bytes",
            "time_skip_ms_per_workflow",
        ] {
            assert!(json[key].is_number(), "{key} in {json}");
        }
        // Three worlds in (at most) ten batches: one world per batch.
        let batches = json["time_skip_ms_per_workflow_batches"].as_array().unwrap();
        assert_eq!(batches.len(), 3, "{json}");
        let figures: Vec<f64> = batches.iter().map(|b| b.as_f64().unwrap()).collect();
        assert_eq!(report.time_skip_ms_per_workflow, median(&figures));
    }

    #[test]
    fn median_is_the_middle_value() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 100.0, 2.0]), 3.0);
    }
}
