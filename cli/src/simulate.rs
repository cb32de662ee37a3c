//! `tempest scenarios`, `run` and `sweep`: worlds of the simulator, one or many seeds.
//!
//! Owns turning worlds' outcomes into what a person reads (outcome, fault counts, trace
//! digest, a pasteable repro line) and into the sweep summary and its JSON, and running many
//! seeds in parallel over threads. It never changes what a world does: a seed and a plan
//! fully determine it.

use crate::Outcome as Exit;
use anyhow::Context as _;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;
use tempest_sim::world::Options;
use tempest_sim::{FaultPlan, Scenario};

/// What went wrong with the user's request (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("unknown scenario {name:?}; the scenarios are: {known}")]
    UnknownScenario { name: String, known: String },
    #[error("fault plan {path}: {message}")]
    Plan { path: String, message: String },
}

fn scenario(name: &str) -> Result<Box<dyn Scenario>, Error> {
    tempest_scenarios::find(name).ok_or_else(|| Error::UnknownScenario {
        name: name.to_owned(),
        known: tempest_scenarios::all().iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
    })
}

pub(crate) fn list(out: &mut impl Write) -> anyhow::Result<Exit> {
    for scenario in tempest_scenarios::all() {
        writeln!(out, "{:<16} {}", scenario.name(), scenario.description())?;
    }
    Ok(Exit::Ok)
}

thread_local! {
    /// The last panic of this thread, captured by the hook so sweeps stay quiet.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn install_quiet_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(s) => (*s).to_owned(),
            None => info.payload().downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".to_owned()),
        };
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{message}{location}")));
    }));
}

/// The last panic the quiet hook caught on this thread, if any since the last call.
pub(crate) fn take_last_panic() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow_mut().take())
}

/// Runs one world; the quiet hook has stored the panic's location for the message.
fn run_world(scenario: &dyn Scenario, options: Options) -> tempest_sim::Outcome {
    let mut outcome = tempest_sim::world::run_catching(scenario, options);
    if let Some(failure) = outcome.failure.as_mut().filter(|f| f.check == "panic") {
        if let Some(located) = LAST_PANIC.with(|p| p.borrow_mut().take()) {
            failure.message = located;
        }
    }
    outcome
}

/// Worlds shrinking may run for one failing seed: enough for delta debugging over a few
/// hundred faults, and a fraction of a second for small worlds.
const SHRINK_BUDGET: u32 = 400;

/// Failing seeds a sweep shrinks (the lowest of each failing check); the others get their
/// explicit plan unshrunk, so a broken build that fails every seed still ends quickly.
const SWEEP_SHRINK_MAX: usize = 8;

/// A seed that failed, with what it ran under.
struct FailingSeed<'a> {
    options: Options,
    outcome: &'a tempest_sim::Outcome,
}

/// The plan file written for a failing seed.
#[derive(Debug)]
struct WrittenPlan {
    path: Option<String>,
    /// Faults in the written plan; None for the seed's swarm plan.
    faults: Option<usize>,
    shrunk_from: Option<usize>,
    attempts: u32,
    note: Option<String>,
}

impl FailingSeed<'_> {
    /// Writes `DIR/tempest-plan-SCENARIO-SEED.json`: the failure's explicit plan, shrunk when
    /// `budget` allows, else the seed's swarm plan if the explicit one does not reproduce.
    fn write_plan(&self, scenario: &dyn Scenario, budget: u32, dir: &Path) -> WrittenPlan {
        let outcome = self.outcome;
        let explicit = self.options.plan.explicit(&outcome.injected);
        let mut written = WrittenPlan { path: None, faults: None, shrunk_from: None, attempts: 0, note: None };
        let plan = if budget == 0 {
            written.note = Some("not shrunk".to_owned());
            explicit
        } else {
            match tempest_sim::shrink_failure(scenario, &self.options, outcome, budget) {
                Some(shrunk) => {
                    written.shrunk_from = Some(shrunk.faults_before);
                    written.attempts = shrunk.attempts;
                    shrunk.plan
                }
                None => {
                    written.note = Some(
                        "its explicit plan did not fail the same way, so this is the seed's swarm plan".to_owned(),
                    );
                    self.options.plan.clone()
                }
            }
        };
        written.faults = plan.fault_count();
        let path = dir.join(format!("tempest-plan-{}-{}.json", outcome.scenario, outcome.seed));
        let path = path.strip_prefix(".").unwrap_or(&path).display().to_string();
        match std::fs::write(&path, plan.to_json()) {
            Ok(()) => written.path = Some(path),
            Err(error) => written.note = Some(format!("cannot write {path}: {error}")),
        }
        written
    }
}

impl WrittenPlan {
    fn describe(&self) -> String {
        let mut text = self.path.clone().unwrap_or_else(|| "none".to_owned());
        let mut details = Vec::new();
        if let Some(faults) = self.faults {
            details.push(format!("{faults} faults"));
        }
        if let Some(before) = self.shrunk_from {
            details.push(format!("shrunk from {before} in {} runs", self.attempts));
        }
        details.extend(self.note.clone());
        if !details.is_empty() {
            text.push_str(&format!(" ({})", details.join(", ")));
        }
        text
    }
}

fn repro_line(scenario: &str, seed: u64) -> String {
    format!("cargo run --release -- run {scenario} --seed {seed}")
}

/// Reads a fault plan file, naming the file on error.
pub(crate) fn read_plan(path: &Path) -> Result<FaultPlan, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Plan { path: path.display().to_string(), message: e.to_string() })?;
    FaultPlan::from_json(&text).map_err(|message| Error::Plan { path: path.display().to_string(), message })
}

pub(crate) struct RunRequest<'a> {
    pub(crate) scenario: &'a str,
    pub(crate) seed: u64,
    pub(crate) record: Option<&'a Path>,
    pub(crate) plan: Option<&'a Path>,
    pub(crate) trace: bool,
    pub(crate) check_every_step: bool,
}

pub(crate) fn run(request: RunRequest<'_>, out: &mut impl Write) -> anyhow::Result<Exit> {
    let scenario = scenario(request.scenario)?;
    let plan = match request.plan {
        Some(path) => read_plan(path)?,
        None => FaultPlan::draw(request.seed),
    };
    if request.trace {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tempest=debug"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    } else {
        install_quiet_panic_hook();
    }
    let options = Options {
        plan: plan.clone(),
        keep_histories: request.record.is_some(),
        check_every_step: request.check_every_step,
        ..Options::swarm(request.seed)
    };
    let outcome = run_world(scenario.as_ref(), options.clone());
    writeln!(out, "scenario {} seed {}", outcome.scenario, outcome.seed)?;
    match &outcome.failure {
        None => writeln!(out, "outcome: passed")?,
        Some(failure) => writeln!(out, "outcome: FAILED {}: {}", failure.check, failure.message)?,
    }
    writeln!(out, "workflows: {} accepted, {} runs completed", outcome.workflows_accepted, outcome.runs_completed)?;
    writeln!(out, "faults: {}", outcome.faults)?;
    let sometimes: Vec<String> = outcome.sometimes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(out, "sometimes: {}", if sometimes.is_empty() { "none".to_owned() } else { sometimes.join(" ") })?;
    writeln!(out, "simulated: {:.1} s in {} steps", outcome.simulated_ms as f64 / 1000.0, outcome.step_count)?;
    writeln!(out, "trace digest: {}", outcome.trace_digest)?;
    if let Some(dir) = request.record {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for history in &outcome.histories {
            let path = dir.join(format!("{}-seed{}-{}.json", outcome.scenario, outcome.seed, history.run_id));
            std::fs::write(&path, history.to_json()).with_context(|| format!("cannot write {}", path.display()))?;
        }
        // The world's explicit plan doubles as its fault log: every injected fault with its
        // time, for `tempest report`, and a plan `--plan` replays.
        let log_path = crate::report::fault_log_path(dir, outcome.scenario, outcome.seed);
        let log = options.plan.explicit(&outcome.injected).to_json();
        std::fs::write(&log_path, log).with_context(|| format!("cannot write {}", log_path.display()))?;
        writeln!(
            out,
            "recorded {} histories in {} (faults injected: {})",
            outcome.histories.len(),
            dir.display(),
            log_path.display()
        )?;
    }
    if outcome.failure.is_some() {
        let mut repro = repro_line(outcome.scenario, outcome.seed);
        if let Some(plan) = request.plan {
            repro.push_str(&format!(" --plan {}", plan.display()));
        } else {
            let failing = FailingSeed { options, outcome: &outcome };
            let written = failing.write_plan(scenario.as_ref(), SHRINK_BUDGET, Path::new("."));
            writeln!(out, "fault plan: {}", written.describe())?;
            if let Some(path) = written.path {
                writeln!(out, "replay the plan with:\n    {repro} --plan {path}")?;
            }
        }
        writeln!(out, "rerun with:\n    {repro}")?;
        return Ok(Exit::Failed);
    }
    Ok(Exit::Ok)
}

pub(crate) struct SweepRequest<'a> {
    pub(crate) scenario: Option<&'a str>,
    pub(crate) seed_count: u64,
    pub(crate) seed_base: u64,
    pub(crate) jobs: Option<u32>,
    pub(crate) json: Option<&'a Path>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SweepFailure {
    pub(crate) seed: u64,
    pub(crate) scenario: String,
    pub(crate) check: String,
    pub(crate) message: String,
    pub(crate) repro: String,
    /// The plan file, empty if it could not be written.
    pub(crate) plan: String,
    /// Faults in the plan file (an explicit plan), if it is one.
    pub(crate) plan_faults: Option<usize>,
    /// Faults before shrinking, if the plan was shrunk.
    pub(crate) shrunk_from: Option<usize>,
}

/// The sweep summary, as printed and as written with `--json`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) scenarios: Vec<String>,
    pub(crate) seed_base: u64,
    pub(crate) seeds: u64,
    pub(crate) passed: u64,
    pub(crate) failed: Vec<SweepFailure>,
    pub(crate) faults: BTreeMap<String, u64>,
    pub(crate) sometimes: BTreeMap<String, u64>,
    pub(crate) runs_completed: u64,
    pub(crate) simulated_seconds: f64,
    pub(crate) wall_seconds: f64,
    pub(crate) seeds_per_second: f64,
    pub(crate) jobs: u32,
}

pub(crate) fn sweep(request: SweepRequest<'_>, out: &mut impl Write) -> anyhow::Result<Exit> {
    let scenarios: Vec<Box<dyn Scenario>> = match request.scenario {
        Some(name) => vec![scenario(name)?],
        None => tempest_scenarios::all(),
    };
    let jobs = request.jobs.unwrap_or_else(crate::core_count);
    install_quiet_panic_hook();
    let total = request.seed_count * scenarios.len() as u64;
    let started = Instant::now();
    let mut failing = Vec::new();
    let mut summary = Summary {
        scenarios: scenarios.iter().map(|s| s.name().to_owned()).collect(),
        seed_base: request.seed_base,
        jobs,
        // Every fact a sweep should reach is listed, so one it never reached shows as 0.
        sometimes: tempest_sim::check::sometimes::ALL.iter().map(|fact| ((*fact).to_owned(), 0)).collect(),
        ..Summary::default()
    };
    let seeds =
        SeedGrid { scenario_count: scenarios.len(), seed_count: request.seed_count, seed_base: request.seed_base };
    let run = |scenario: usize, seed: u64| run_world(scenarios[scenario].as_ref(), Options::swarm(seed));
    run_in_parallel(seeds, jobs, "worlds", run, |outcome| {
        summary.runs_completed += outcome.runs_completed;
        summary.simulated_seconds += outcome.simulated_ms as f64 / 1000.0;
        for (kind, count) in outcome.faults.iter() {
            *summary.faults.entry(kind.to_owned()).or_default() += count;
        }
        for (fact, count) in &outcome.sometimes {
            *summary.sometimes.entry((*fact).to_owned()).or_default() += count;
        }
        if outcome.failure.is_some() {
            failing.push(outcome);
        } else {
            summary.passed += 1;
        }
    });
    summary.failed = plan_failures(&scenarios, &mut failing, jobs, Path::new("."));
    summary.seeds = total;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    summary.seeds_per_second = total as f64 / summary.wall_seconds.max(1e-9);
    summary.failed.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
    write_summary(&summary, out)?;
    if let Some(path) = request.json {
        crate::write_json(path, &summary)?;
    }
    Ok(if summary.failed.is_empty() { Exit::Ok } else { Exit::Failed })
}

/// Which worlds a sweep runs: `seed_count` seeds from `seed_base` of each of
/// `scenario_count` scenarios.
#[derive(Clone, Copy)]
pub(crate) struct SeedGrid {
    pub(crate) scenario_count: usize,
    pub(crate) seed_count: u64,
    pub(crate) seed_base: u64,
}

/// Runs every world of `seeds` on `jobs` threads (each takes the next world as it frees up)
/// and hands each result to `collect` on this thread as it arrives, with a progress bar of
/// `what` on stderr when it is a terminal. Both sweep modes run their seeds through this.
pub(crate) fn run_in_parallel<T: Send>(
    seeds: SeedGrid,
    jobs: u32,
    what: &str,
    run: impl Fn(usize, u64) -> T + Sync,
    mut collect: impl FnMut(T),
) {
    let total = seeds.seed_count * seeds.scenario_count as u64;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}, {{per_sec}}, eta {{eta}}"
        ))
        .expect("a valid template"),
    );
    let next = AtomicU64::new(0);
    let (sender, receiver) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let sender = sender.clone();
            let (next, run) = (&next, &run);
            scope.spawn(move || loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let scenario = (index / seeds.seed_count) as usize;
                let result = run(scenario, seeds.seed_base.wrapping_add(index % seeds.seed_count));
                if sender.send(result).is_err() {
                    break;
                }
            });
        }
        drop(sender);
        for result in receiver {
            progress.inc(1);
            collect(result);
        }
    });
    progress.finish_and_clear();
}

fn write_summary(summary: &Summary, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "sweep of {} over seeds {:#x}.. ({} jobs)",
        summary.scenarios.join(", "),
        summary.seed_base,
        summary.jobs
    )?;
    writeln!(out, "seeds run:        {}", summary.seeds)?;
    writeln!(out, "passed:           {}", summary.passed)?;
    writeln!(out, "failed:           {}", summary.failed.len())?;
    writeln!(out, "runs completed:   {}", summary.runs_completed)?;
    writeln!(
        out,
        "simulated time:   {:.0} s ({:.1} days)",
        summary.simulated_seconds,
        summary.simulated_seconds / 86_400.0
    )?;
    writeln!(out, "wall time:        {:.2} s", summary.wall_seconds)?;
    writeln!(out, "seeds per second: {:.0}", summary.seeds_per_second)?;
    writeln!(out, "faults injected:")?;
    for (kind, count) in &summary.faults {
        writeln!(out, "    {kind:<22} {count}")?;
    }
    if !summary.sometimes.is_empty() {
        writeln!(out, "sometimes:")?;
        for (fact, count) in &summary.sometimes {
            let never = if *count == 0 { "  (never reached in this sweep)" } else { "" };
            writeln!(out, "    {fact:<44} {count}{never}")?;
        }
    }
    for failure in &summary.failed {
        writeln!(out, "FAILED {} seed {}: {}: {}", failure.scenario, failure.seed, failure.check, failure.message)?;
        writeln!(out, "    rerun with: {}", failure.repro)?;
        let shrunk = match (failure.plan_faults, failure.shrunk_from) {
            (Some(faults), Some(before)) => format!(" ({faults} faults, shrunk from {before})"),
            (Some(faults), None) => format!(" ({faults} faults, not shrunk)"),
            _ => String::new(),
        };
        writeln!(out, "    fault plan: {}{shrunk}", failure.plan)?;
        writeln!(out, "    replay it:  {} --plan {}", failure.repro, failure.plan)?;
    }
    Ok(())
}

/// Writes a plan for every failing seed, shrinking the lowest seeds of each failing check
/// (up to `SWEEP_SHRINK_MAX` in all) on `jobs` threads; returns the failures in seed order.
fn plan_failures(
    scenarios: &[Box<dyn Scenario>],
    failing: &mut [tempest_sim::Outcome],
    jobs: u32,
    dir: &Path,
) -> Vec<SweepFailure> {
    failing.sort_by(|a, b| (a.scenario, a.seed).cmp(&(b.scenario, b.seed)));
    let mut shrink_first = BTreeMap::new();
    for (index, outcome) in failing.iter().enumerate() {
        let check = outcome.failure.as_ref().map(|f| f.check.as_str()).unwrap_or_default();
        shrink_first.entry((outcome.scenario, check)).or_insert(index);
    }
    let to_shrink: Vec<usize> = shrink_first.into_values().take(SWEEP_SHRINK_MAX).collect();
    let next = AtomicU64::new(0);
    let written: Vec<(usize, WrittenPlan)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                let (next, to_shrink, failing) = (&next, &to_shrink, &*failing);
                scope.spawn(move || {
                    let mut written = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(outcome) = failing.get(index) else { break };
                        let scenario = scenarios.iter().find(|s| s.name() == outcome.scenario).expect("swept scenario");
                        let budget = if to_shrink.contains(&index) { SHRINK_BUDGET } else { 0 };
                        let seed = FailingSeed { options: Options::swarm(outcome.seed), outcome };
                        written.push((index, seed.write_plan(scenario.as_ref(), budget, dir)));
                    }
                    written
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().expect("plan writer")).collect()
    });
    let mut by_index: BTreeMap<usize, WrittenPlan> = written.into_iter().collect();
    failing
        .iter()
        .enumerate()
        .map(|(index, outcome)| {
            let plan = by_index.remove(&index).expect("every failure has a plan");
            if let Some(note) = plan.note.as_ref().filter(|_| plan.path.is_none()) {
                eprintln!("tempest sweep: {note}");
            }
            let failure = outcome.failure.clone().expect("failing outcome");
            SweepFailure {
                seed: outcome.seed,
                scenario: outcome.scenario.to_owned(),
                check: failure.check,
                message: failure.message,
                repro: repro_line(outcome.scenario, outcome.seed),
                plan: plan.path.clone().unwrap_or_default(),
                plan_faults: plan.faults,
                shrunk_from: plan.shrunk_from,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use tempest_engine::history::Kind;
    use tempest_engine::services::{Activities, LlmRequest, LlmResponse};
    use tempest_engine::Registry;
    use tempest_sim::rng::Rng;
    use tempest_sim::scenario::{Finished, Start, ToolOutcome};

    /// hello_llm with a business check that no LLM attempt ever failed: any LLM fault trips it,
    /// so a failing swarm seed carries many faults of which one suffices.
    struct NoFailedAttempts(Box<dyn Scenario>);

    impl Scenario for NoFailedAttempts {
        fn name(&self) -> &'static str {
            self.0.name()
        }
        fn description(&self) -> &'static str {
            self.0.description()
        }
        fn registry(&self) -> Registry {
            self.0.registry()
        }
        fn activities(&self) -> Activities {
            self.0.activities()
        }
        fn workload(&self, rng: &mut Rng) -> Vec<Start> {
            self.0.workload(rng)
        }
        fn llm_answer(&self, request: &LlmRequest, rng: &mut Rng) -> LlmResponse {
            self.0.llm_answer(request, rng)
        }
        fn tool_call(&self, name: &str, arguments: &Value, rng: &mut Rng) -> ToolOutcome {
            self.0.tool_call(name, arguments, rng)
        }
        fn liveness_bound(&self) -> std::time::Duration {
            self.0.liveness_bound()
        }
        fn check(&self, finished: &Finished<'_>) -> Result<(), String> {
            let failed = finished
                .histories
                .iter()
                .flat_map(|h| &h.events)
                .any(|e| matches!(e.kind, Kind::ActivityAttemptFailed { .. }));
            if failed {
                Err("an LLM attempt failed".to_owned())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn sweep_writes_a_shrunk_plan_that_replays_the_failure() {
        let scenarios: Vec<Box<dyn Scenario>> =
            vec![Box::new(NoFailedAttempts(tempest_scenarios::find("hello_llm").expect("built in")))];
        let mut failing: Vec<tempest_sim::Outcome> = (0..200)
            .map(|seed| tempest_sim::world::run_catching(scenarios[0].as_ref(), Options::swarm(seed)))
            .filter(|outcome| !outcome.passed())
            .take(3)
            .collect();
        assert_eq!(failing.len(), 3, "no LLM fault in 200 seeds");
        let dir = std::env::temp_dir().join(format!("tempest-shrink-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let failures = plan_failures(&scenarios, &mut failing, 2, &dir);
        assert_eq!(failures.len(), 3);
        // One failing check: only the lowest seed is shrunk, the others keep their explicit plan.
        assert!(failures[0].shrunk_from.is_some() && failures[1].shrunk_from.is_none(), "{failures:?}");
        let first = &failures[0];
        let plan = FaultPlan::from_json(&std::fs::read_to_string(&first.plan).expect("plan written")).expect("plan");
        assert!(first.plan_faults < first.shrunk_from.map(|n| n / 4), "{first:?}");
        let run_with = |plan: FaultPlan| {
            let outcome =
                tempest_sim::world::run_catching(scenarios[0].as_ref(), Options { plan, ..Options::swarm(first.seed) });
            outcome.failure.map(|f| f.check)
        };
        assert_eq!(run_with(plan.clone()), Some(first.check.clone()));
        // Shrunk means every fault left is needed: without any one of them the failure is gone.
        // (Scheduled faults hit the nth decision of their kind, so dropping one message can
        // move a later fault onto another message; a minimal plan may need several.)
        let schedule = plan.schedule.clone().expect("shrunk plans are explicit");
        for index in 0..schedule.len() {
            let mut smaller = plan.clone();
            smaller.schedule.as_mut().expect("explicit").remove(index);
            assert_ne!(run_with(smaller), Some(first.check.clone()), "fault {index} of {plan:?} is not needed");
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
