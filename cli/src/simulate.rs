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
use std::path::{Path, PathBuf};
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

fn repro_line(scenario: &str, seed: u64) -> String {
    format!("cargo run --release -- run {scenario} --seed {seed}")
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
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Plan { path: path.display().to_string(), message: e.to_string() })?;
            FaultPlan::from_json(&text).map_err(|message| Error::Plan { path: path.display().to_string(), message })?
        }
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
    let outcome = run_world(scenario.as_ref(), options);
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
        writeln!(out, "recorded {} histories in {}", outcome.histories.len(), dir.display())?;
    }
    if outcome.failure.is_some() {
        if request.plan.is_none() {
            let path = PathBuf::from(format!("tempest-plan-{}-{}.json", outcome.scenario, outcome.seed));
            std::fs::write(&path, plan.to_json()).with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "fault plan: {}", path.display())?;
        }
        let mut repro = repro_line(outcome.scenario, outcome.seed);
        if let Some(plan) = request.plan {
            repro.push_str(&format!(" --plan {}", plan.display()));
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
    pub(crate) plan: String,
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
    let jobs = request
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)));
    install_quiet_panic_hook();
    let total = request.seed_count * scenarios.len() as u64;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} worlds, {per_sec}, eta {eta}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let (sender, receiver) = mpsc::channel();
    let mut summary = Summary {
        scenarios: scenarios.iter().map(|s| s.name().to_owned()).collect(),
        seed_base: request.seed_base,
        jobs,
        ..Summary::default()
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let sender = sender.clone();
            let (next, scenarios) = (&next, &scenarios);
            scope.spawn(move || loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let scenario = &scenarios[(index / request.seed_count) as usize];
                let seed = request.seed_base.wrapping_add(index % request.seed_count);
                let outcome = run_world(scenario.as_ref(), Options::swarm(seed));
                if sender.send(outcome).is_err() {
                    break;
                }
            });
        }
        drop(sender);
        for outcome in receiver {
            progress.inc(1);
            summary.runs_completed += outcome.runs_completed;
            summary.simulated_seconds += outcome.simulated_ms as f64 / 1000.0;
            for (kind, count) in outcome.faults.iter() {
                *summary.faults.entry(kind.to_owned()).or_default() += count;
            }
            for (fact, count) in &outcome.sometimes {
                *summary.sometimes.entry((*fact).to_owned()).or_default() += count;
            }
            match outcome.failure {
                None => summary.passed += 1,
                Some(failure) => {
                    let plan_path = format!("tempest-plan-{}-{}.json", outcome.scenario, outcome.seed);
                    if let Err(error) = std::fs::write(&plan_path, FaultPlan::draw(outcome.seed).to_json()) {
                        eprintln!("tempest sweep: cannot write {plan_path}: {error}");
                    }
                    summary.failed.push(SweepFailure {
                        seed: outcome.seed,
                        scenario: outcome.scenario.to_owned(),
                        check: failure.check,
                        message: failure.message,
                        repro: repro_line(outcome.scenario, outcome.seed),
                        plan: plan_path,
                    });
                }
            }
        }
    });
    progress.finish_and_clear();
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
            writeln!(out, "    {fact:<44} {count}")?;
        }
    }
    for failure in &summary.failed {
        writeln!(out, "FAILED {} seed {}: {}: {}", failure.scenario, failure.seed, failure.check, failure.message)?;
        writeln!(out, "    rerun with: {}", failure.repro)?;
        writeln!(out, "    fault plan: {}", failure.plan)?;
    }
    Ok(())
}
