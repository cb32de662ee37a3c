//! `tempest bench engine`: how fast the replay machine replays, and what a waiting run costs.
//!
//! Replay speed: one run of about 10,000 events (activities, some failing and retried, timers
//! and signals) is recorded by driving the engine with the scripted test host, then
//! `Machine::replay` of that history is timed several times on this thread; the best time
//! counts, as the least disturbed by the rest of the machine.
//!
//! Memory per waiting run: N runs of a workflow that awaits a signal are started in one
//! `Engine`, and the growth of the resident set (from `/proc/self/statm`) is divided by N.
//! Unsafe code is forbidden in this workspace, so there is no counting allocator; RSS is what
//! the operating system charges, allocator overhead included. The history is measured the same
//! way, by cloning every waiting run's events into a vector after the engine is measured, and
//! is subtracted to give the cost of the machine and run state alone. The memory is measured
//! first, before replay allocates and frees, so that freed memory cannot be reused by the runs
//! and hide their cost. It never touches the engine's internals: only its public API.

use serde::Serialize;
use serde_json::{json, Value};
use std::io::{self, Write};
use std::time::{Duration, Instant};
use tempest_engine::testing::Host;
use tempest_engine::{Ctx, Engine, Event, Failure, Input, Machine, Registry, RetryPolicy, Time, WorkflowResult};

/// The replay speed the engine aims for.
const EVENTS_PER_SECOND_GOAL: f64 = 1_000_000.0;
/// The memory a run waiting on a signal may cost, without its history.
const BYTES_PER_WAITING_RUN_GOAL: f64 = 2048.0;
/// Runs started before the memory baseline; they pay one-off costs and are not counted.
const WARM_UP_RUN_COUNT: usize = 1_000;

pub(crate) struct Config {
    /// Events in the replayed history; the mix's steps make it land within a few events.
    pub(crate) replay_event_count: usize,
    /// Timed replays; the best one counts.
    pub(crate) replay_repeat_count: usize,
    pub(crate) waiting_run_count: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { replay_event_count: 10_000, replay_repeat_count: 10, waiting_run_count: 100_000 }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `release` or `debug`: debug figures are not representative.
    build: &'static str,
    replay_event_count: usize,
    replay_repeat_count: usize,
    replay_seconds_best: f64,
    events_per_second: u64,
    events_per_second_goal: u64,
    waiting_run_count: usize,
    /// Machine and run state of one run waiting on a signal, history excluded; `null` where
    /// `/proc/self/statm` cannot be read.
    bytes_per_waiting_run: Option<f64>,
    /// The same, its history (one `workflow_started` event) included.
    bytes_per_waiting_run_with_history: Option<f64>,
    history_bytes_per_waiting_run: Option<f64>,
    bytes_per_waiting_run_goal: u64,
}

/// Runs both measurements.
pub(crate) fn run(config: &Config) -> Report {
    let memory = measure_waiting_runs(config.waiting_run_count);
    let events = record_mix(config.replay_event_count);
    let best = time_replay(&events, config.replay_repeat_count);
    let per_run = |bytes: u64| bytes as f64 / config.waiting_run_count as f64;
    Report {
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        replay_event_count: events.len(),
        replay_repeat_count: config.replay_repeat_count,
        replay_seconds_best: best.as_secs_f64(),
        events_per_second: (events.len() as f64 / best.as_secs_f64().max(1e-9)) as u64,
        events_per_second_goal: EVENTS_PER_SECOND_GOAL as u64,
        waiting_run_count: config.waiting_run_count,
        bytes_per_waiting_run: memory.map(|m| per_run(m.with_history_bytes) - per_run(m.history_bytes)),
        bytes_per_waiting_run_with_history: memory.map(|m| per_run(m.with_history_bytes)),
        history_bytes_per_waiting_run: memory.map(|m| per_run(m.history_bytes)),
        bytes_per_waiting_run_goal: BYTES_PER_WAITING_RUN_GOAL as u64,
    }
}

impl Report {
    pub(crate) fn write_summary(&self, out: &mut impl Write) -> io::Result<()> {
        let verdict = |met: bool| if met { "goal met" } else { "GOAL MISSED" };
        writeln!(out, "tempest bench engine ({} build)", self.build)?;
        if self.build == "debug" {
            writeln!(out, "  note: a debug build; run `cargo run --release -- bench engine` for real figures")?;
        }
        writeln!(
            out,
            "replay: {} events, best of {}: {:.3} ms = {} events/s ({}: >= {})",
            grouped(self.replay_event_count as u64),
            self.replay_repeat_count,
            self.replay_seconds_best * 1e3,
            grouped(self.events_per_second),
            verdict(self.events_per_second >= self.events_per_second_goal),
            grouped(self.events_per_second_goal),
        )?;
        writeln!(
            out,
            "memory: {} runs waiting on a signal (RSS growth / runs)",
            grouped(self.waiting_run_count as u64)
        )?;
        match (self.bytes_per_waiting_run, self.bytes_per_waiting_run_with_history, self.history_bytes_per_waiting_run)
        {
            (Some(bare), Some(with_history), Some(history)) => {
                writeln!(
                    out,
                    "  machine + run state: {bare:.0} bytes/run ({}: <= {})",
                    verdict(bare <= self.bytes_per_waiting_run_goal as f64),
                    self.bytes_per_waiting_run_goal
                )?;
                writeln!(out, "  history:             {history:.0} bytes/run")?;
                writeln!(out, "  with history:        {with_history:.0} bytes/run")?;
            }
            _ => writeln!(out, "  not measured: /proc/self/statm is not readable here")?,
        }
        Ok(())
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// Which parts step `step_index` of the mix has. The pattern repeats every 120 steps.
struct Step {
    /// Attempts that fail before one succeeds: every 4th step once, every 8th step twice.
    failed_attempt_count: u32,
    sleeps: bool,
    waits_for_signal: bool,
}

impl Step {
    fn of(step_index: u64) -> Step {
        Step {
            failed_attempt_count: match step_index {
                i if i % 8 == 0 => 2,
                i if i % 4 == 0 => 1,
                _ => 0,
            },
            sleeps: step_index % 3 == 0,
            waits_for_signal: step_index % 5 == 0,
        }
    }

    /// Events this step adds to the history.
    fn event_count(&self) -> usize {
        let activity = 2 + self.failed_attempt_count as usize;
        let timer = if self.sleeps { 2 } else { 0 };
        let signal = usize::from(self.waits_for_signal);
        activity + timer + signal
    }
}

/// The bench's workload: an agent-like loop of tool calls, pauses and nudges.
async fn mix(ctx: Ctx, step_count: u64) -> WorkflowResult<u64> {
    let mut total: u64 = 0;
    for step_index in 0..step_count {
        let step = Step::of(step_index);
        let output: u64 = ctx.activity("tool", &step_index).retry(RetryPolicy::attempts(5)).await?;
        total = total.wrapping_add(output);
        if step.sleeps {
            ctx.sleep(Duration::from_secs(30)).await?;
        }
        if step.waits_for_signal {
            let nudge: u64 = ctx.signal("nudge").await?;
            total = total.wrapping_add(nudge);
        }
    }
    Ok(total)
}

/// A run that starts and waits for one signal, as a run waiting for a human does.
async fn wait_signal(ctx: Ctx, _input: Value) -> WorkflowResult<Value> {
    ctx.signal("go").await
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("bench_mix", mix);
    registry.register("bench_wait_signal", wait_signal);
    registry
}

/// Records one run of the mix with at least `event_count_min` events and returns its history.
fn record_mix(event_count_min: usize) -> Vec<Event> {
    // workflow_started and workflow_completed, then the steps.
    let mut event_count = 2;
    let mut step_count = 0;
    while event_count < event_count_min {
        event_count += Step::of(step_count).event_count();
        step_count += 1;
    }
    let workflow_id = "bench-replay";
    let mut host = Host::new(registry());
    let run_id = host.start("bench_mix", workflow_id, json!(step_count));
    let mut signal_count = 0;
    while !host.closed.contains(&run_id) {
        assert!(host.appended[&run_id].len() <= event_count, "run {run_id} outgrew its planned {event_count} events");
        if let Some(task) = host.activities.values().next().cloned() {
            let step_index = task.input.decode::<u64>().expect("tool input is the step index");
            if task.attempt <= Step::of(step_index).failed_attempt_count {
                let failure = if task.attempt == 1 {
                    Failure::Overloaded { retry_after_ms: None }
                } else {
                    Failure::RateLimited { retry_after_ms: Some(2_000) }
                };
                host.fail(&task, failure);
            } else {
                host.complete(&task, json!(step_index));
            }
        } else if !host.timers.is_empty() {
            host.fire_next_timer();
        } else {
            signal_count += 1;
            let signal_id = format!("nudge-{signal_count}");
            host.signal(workflow_id, &signal_id, "nudge", json!(1));
        }
    }
    let events = host.appended.remove(&run_id).expect("the run appended events");
    assert_eq!(events.len(), event_count, "run {run_id}: events planned");
    events
}

/// The best wall time of `repeat_count` replays of `events`.
fn time_replay(events: &[Event], repeat_count: usize) -> Duration {
    let registry = registry();
    let mut best = Duration::MAX;
    // One untimed replay first, so that the timed ones start with warm caches.
    for repeat_index in 0..=repeat_count {
        let started = Instant::now();
        let replayed = Machine::replay(&registry, std::hint::black_box(events));
        let elapsed = started.elapsed();
        let (machine, commands) = replayed.expect("the bench history replays");
        assert!(commands.is_empty(), "replay of a closed run issued commands");
        assert!(machine.is_closed(), "replay of a closed run left it open");
        if repeat_index > 0 {
            best = best.min(elapsed);
        }
    }
    best
}

#[derive(Clone, Copy, Debug)]
struct Memory {
    /// RSS growth while the runs started, histories included.
    with_history_bytes: u64,
    /// RSS growth of a copy of the histories alone.
    history_bytes: u64,
}

fn measure_waiting_runs(run_count: usize) -> Option<Memory> {
    let mut engine = Engine::new(registry());
    let mut effects = Vec::new();
    let workflow_id = |run_index: usize| format!("wait-{run_index:07}");
    let mut start = |engine: &mut Engine, run_index: usize| {
        let input = Input::StartRun {
            workflow_id: workflow_id(run_index),
            workflow_type: "bench_wait_signal".to_owned(),
            input: Value::Null,
        };
        engine.handle(Time::ZERO, input, &mut effects).expect("the engine starts a bench run");
        effects.clear();
    };
    for run_index in 0..WARM_UP_RUN_COUNT {
        start(&mut engine, run_index);
    }
    let before = resident_bytes()?;
    let measured = WARM_UP_RUN_COUNT..WARM_UP_RUN_COUNT + run_count;
    for run_index in measured.clone() {
        start(&mut engine, run_index);
    }
    let with_engine = resident_bytes()?;

    // The histories again, alone: the same events, cloned into vectors of the same capacity.
    let mut histories: Vec<Vec<Event>> = Vec::with_capacity(run_count);
    for run_index in measured {
        let run_id = engine.latest_run(&workflow_id(run_index)).expect("every bench run started").to_owned();
        let history = engine.history(&run_id).expect("a started run has a history");
        histories.push(history.events);
    }
    let after = resident_bytes()?;
    // The outer vector holds each history's header inline, where the engine keeps it inside
    // its own per-run record; only the events' heap belongs to the history.
    let outer_bytes = (run_count * std::mem::size_of::<Vec<Event>>()) as u64;

    let sample = engine.latest_run(&workflow_id(WARM_UP_RUN_COUNT)).expect("started");
    let snapshot = engine.machine(sample).expect("started").snapshot();
    assert_eq!(snapshot.awaited_signals, ["go"], "bench runs wait on a signal");
    assert!(histories.iter().all(|events| events.len() == 1));

    Some(Memory {
        with_history_bytes: with_engine.saturating_sub(before),
        history_bytes: after.saturating_sub(with_engine).saturating_sub(outer_bytes),
    })
}

/// Resident set size in bytes: resident pages from `/proc/self/statm` times the page size.
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let page_count: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(page_count * page_size())
}

/// The page size from the auxiliary vector (`AT_PAGESZ`), as there is no libc call without
/// unsafe code; 4 KiB if it cannot be read.
fn page_size() -> u64 {
    const AT_PAGESZ: usize = 6;
    const WORD_LEN: usize = std::mem::size_of::<usize>();
    let word = |bytes: &[u8]| usize::from_ne_bytes(bytes.try_into().expect("one word"));
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| {
            auxv.chunks_exact(2 * WORD_LEN)
                .find(|pair| word(&pair[..WORD_LEN]) == AT_PAGESZ)
                .map(|pair| word(&pair[WORD_LEN..]) as u64)
        })
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_history_has_the_planned_events_and_every_kind() {
        let events = record_mix(300);
        assert!((300..310).contains(&events.len()), "{}", events.len());
        let names: std::collections::BTreeSet<&str> = events.iter().map(|e| e.kind.name()).collect();
        for name in [
            "activity_scheduled",
            "activity_attempt_failed",
            "activity_completed",
            "timer_started",
            "timer_fired",
            "signal_received",
            "workflow_completed",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
    }

    #[test]
    fn small_bench_reports_every_figure() {
        let report = run(&Config { replay_event_count: 200, replay_repeat_count: 2, waiting_run_count: 500 });
        assert!(report.events_per_second > 0);
        assert!(report.bytes_per_waiting_run.is_some());
        let mut summary = Vec::new();
        report.write_summary(&mut summary).unwrap();
        let summary = String::from_utf8(summary).unwrap();
        assert!(summary.contains("events/s"), "{summary}");
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["events_per_second"].is_u64());
        assert!(json["bytes_per_waiting_run"].is_f64());
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(5_037_714), "5,037,714");
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
    }
}
