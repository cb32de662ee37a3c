//! `tempest run` and `sweep` with `--mode full-stack`: worlds of the runtime's real network
//! code under turmoil (`tempest_runtime::fullstack`), one or many seeds.
//!
//! Owns which scenarios the full-stack mode supports, turning a world's outcome into what a
//! person reads (outcome, faults, simulated time, digest, a repro line) and the sweep summary
//! and its JSON, and running seeds in parallel over threads. It never changes what a world
//! does: the seed alone determines it.

use crate::simulate::{run_in_parallel, SeedGrid};
use crate::Outcome as Exit;
use anyhow::Context as _;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tempest_runtime::fullstack::{self, workload, Options, Workload};

/// Which world `run` and `sweep` build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// The deterministic simulator: the engine and store in virtual time
    #[default]
    Fast,
    /// The runtime's real HTTP API, API client and LLM client over turmoil's simulated network
    FullStack,
}

/// The scenarios the full-stack mode runs: the runtime's `steps` workflow, and the simulator
/// scenarios whose runs need only the LLM and the runtime's built-in tools. Not
/// `human_approval` (its signals come from simulated humans) nor `long_sleep` (days of
/// simulated time, a turmoil step per 5 ms of it).
pub(crate) const SUPPORTED: [&str; 8] =
    ["steps", "hello_llm", "agent_loop", "tool_agent", "rag_ingest", "validated_output", "multi_agent", "saga_booking"];

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("scenario {name:?} is not supported in --mode full-stack; supported: {}", SUPPORTED.join(", "))]
    Unsupported { name: String },
    #[error("unknown scenario {name:?}; in --mode full-stack the scenarios are: {}", SUPPORTED.join(", "))]
    Unknown { name: String },
    #[error("{flag} is not supported with --mode full-stack")]
    Flag { flag: &'static str },
}

/// Refuses flags of the fast simulator that the full-stack mode does not have.
pub(crate) fn refuse_flag(given: bool, flag: &'static str) -> Result<(), Error> {
    if given {
        Err(Error::Flag { flag })
    } else {
        Ok(())
    }
}

/// Checks `name` is a full-stack scenario.
fn supported(name: &str) -> Result<&'static str, Error> {
    match SUPPORTED.iter().find(|s| **s == name) {
        Some(found) => Ok(found),
        None if tempest_scenarios::find(name).is_some() => Err(Error::Unsupported { name: name.to_owned() }),
        None => Err(Error::Unknown { name: name.to_owned() }),
    }
}

/// Runs one full-stack world. A task of the server that panics (an engine assertion) only
/// stops that task, and the world then fails on what it caused; the panic's message, caught by
/// the quiet hook, is added to the failure so it is not lost.
fn run_world(scenario: &str, seed: u64) -> fullstack::Outcome {
    crate::simulate::take_last_panic();
    let mut outcome = fullstack::run(&workload(scenario, seed), &Options::seeded(seed));
    if let (Some(failure), Some(panic)) = (outcome.failure.as_mut(), crate::simulate::take_last_panic()) {
        failure.message.push_str(&format!(" (a task panicked: {panic})"));
    }
    outcome
}

/// The workload of a supported scenario for `seed`.
pub(crate) fn workload(name: &str, seed: u64) -> Workload {
    match name {
        "steps" => workload::steps(seed),
        other => {
            let scenario = tempest_scenarios::find(other).expect("a supported scenario is built in");
            workload::from_scenario(Arc::from(scenario), seed)
        }
    }
}

fn repro_line(scenario: &str, seed: u64) -> String {
    format!("tempest run {scenario} --seed {seed} --mode full-stack")
}

fn faults_line(faults: &BTreeMap<String, u64>) -> String {
    if faults.is_empty() {
        return "none".to_owned();
    }
    faults.iter().map(|(kind, count)| format!("{kind}={count}")).collect::<Vec<_>>().join(" ")
}

pub(crate) fn run(scenario: &str, seed: u64, record: Option<&Path>, out: &mut impl Write) -> anyhow::Result<Exit> {
    let scenario = supported(scenario)?;
    crate::simulate::install_quiet_panic_hook();
    let outcome = run_world(scenario, seed);
    writeln!(out, "scenario {scenario} seed {seed} (full-stack)")?;
    match &outcome.failure {
        None => writeln!(out, "outcome: passed")?,
        Some(failure) => writeln!(out, "outcome: FAILED {}: {}", failure.check, failure.message)?,
    }
    writeln!(out, "workflows: {} accepted, {} runs completed", outcome.workflows_accepted, outcome.runs_completed)?;
    writeln!(out, "faults: {}", faults_line(&outcome.faults))?;
    writeln!(out, "simulated: {:.1} s in {} steps", outcome.simulated_ms as f64 / 1000.0, outcome.step_count)?;
    writeln!(out, "outcome digest: {}", outcome.digest)?;
    if let Some(dir) = record {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for history in &outcome.histories {
            let path = dir.join(format!("{scenario}-fullstack-seed{seed}-{}.json", history.run_id));
            std::fs::write(&path, history.to_json()).with_context(|| format!("cannot write {}", path.display()))?;
        }
        writeln!(out, "recorded {} histories in {}", outcome.histories.len(), dir.display())?;
    }
    if outcome.failure.is_some() {
        writeln!(out, "rerun with:\n    {}", repro_line(scenario, seed))?;
        return Ok(Exit::Failed);
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Serialize)]
pub(crate) struct SweepFailure {
    pub(crate) seed: u64,
    pub(crate) scenario: String,
    pub(crate) check: String,
    pub(crate) message: String,
    pub(crate) repro: String,
}

/// The full-stack sweep summary, as printed and as written with `--json`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) mode: &'static str,
    pub(crate) scenarios: Vec<String>,
    pub(crate) seed_base: u64,
    pub(crate) seeds: u64,
    pub(crate) passed: u64,
    pub(crate) failed: Vec<SweepFailure>,
    pub(crate) faults: BTreeMap<String, u64>,
    pub(crate) runs_completed: u64,
    pub(crate) simulated_seconds: f64,
    pub(crate) wall_seconds: f64,
    pub(crate) seeds_per_second: f64,
    pub(crate) jobs: u32,
}

pub(crate) fn sweep(request: crate::simulate::SweepRequest<'_>, out: &mut impl Write) -> anyhow::Result<Exit> {
    let scenarios: Vec<&'static str> = match request.scenario {
        Some(name) => vec![supported(name)?],
        None => SUPPORTED.to_vec(),
    };
    let jobs = request.jobs.unwrap_or_else(crate::core_count);
    crate::simulate::install_quiet_panic_hook();
    let total = request.seed_count * scenarios.len() as u64;
    let started = Instant::now();
    let mut summary = Summary {
        mode: "full-stack",
        scenarios: scenarios.iter().map(|s| (*s).to_owned()).collect(),
        seed_base: request.seed_base,
        jobs,
        ..Summary::default()
    };
    let seeds =
        SeedGrid { scenario_count: scenarios.len(), seed_count: request.seed_count, seed_base: request.seed_base };
    run_in_parallel(
        seeds,
        jobs,
        "full-stack worlds",
        |scenario, seed| run_world(scenarios[scenario], seed),
        |outcome| {
            summary.runs_completed += outcome.runs_completed;
            summary.simulated_seconds += outcome.simulated_ms as f64 / 1000.0;
            for (kind, count) in &outcome.faults {
                *summary.faults.entry(kind.clone()).or_default() += count;
            }
            match outcome.failure {
                None => summary.passed += 1,
                Some(failure) => summary.failed.push(SweepFailure {
                    seed: outcome.seed,
                    repro: repro_line(&outcome.scenario, outcome.seed),
                    scenario: outcome.scenario,
                    check: failure.check,
                    message: failure.message,
                }),
            }
        },
    );
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
        "full-stack sweep of {} over seeds {:#x}.. ({} jobs)",
        summary.scenarios.join(", "),
        summary.seed_base,
        summary.jobs
    )?;
    writeln!(out, "seeds run:        {}", summary.seeds)?;
    writeln!(out, "passed:           {}", summary.passed)?;
    writeln!(out, "failed:           {}", summary.failed.len())?;
    writeln!(out, "runs completed:   {}", summary.runs_completed)?;
    writeln!(out, "simulated time:   {:.0} s", summary.simulated_seconds)?;
    writeln!(out, "wall time:        {:.2} s", summary.wall_seconds)?;
    writeln!(out, "seeds per second: {:.1}", summary.seeds_per_second)?;
    writeln!(out, "faults injected:")?;
    for (kind, count) in &summary.faults {
        writeln!(out, "    {kind:<26} {count}")?;
    }
    for failure in &summary.failed {
        writeln!(out, "FAILED {} seed {}: {}: {}", failure.scenario, failure.seed, failure.check, failure.message)?;
        writeln!(out, "    rerun with: {}", failure.repro)?;
    }
    Ok(())
}

/// Seeds per second of `scenario` in both modes, on this thread, measured one after the
/// other in the same process.
#[derive(Debug, Serialize)]
pub(crate) struct Ratio {
    pub(crate) scenario: &'static str,
    pub(crate) fast_seed_count: u64,
    pub(crate) fast_seeds_per_second: f64,
    pub(crate) full_stack_seed_count: u64,
    pub(crate) full_stack_seeds_per_second: f64,
    pub(crate) fast_over_full_stack: f64,
}

/// Measures `Ratio` for hello_llm (a scenario both modes run): `fast_seed_count` seeds of
/// the simulator, then `full_stack_seed_count` full-stack seeds. Fails if a seed fails.
pub(crate) fn measure_ratio(fast_seed_count: u64, full_stack_seed_count: u64) -> anyhow::Result<Ratio> {
    let scenario = "hello_llm";
    let fast = tempest_scenarios::find(scenario).expect("built in");
    let started = Instant::now();
    for seed in 0..fast_seed_count {
        let outcome = tempest_sim::world::run_catching(fast.as_ref(), tempest_sim::world::Options::swarm(seed));
        if let Some(failure) = outcome.failure {
            anyhow::bail!("{scenario} seed {seed} (fast) failed {}: {}", failure.check, failure.message);
        }
    }
    let fast_seeds_per_second = fast_seed_count as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let started = Instant::now();
    for seed in 0..full_stack_seed_count {
        let outcome = fullstack::run(&workload(scenario, seed), &Options::seeded(seed));
        if let Some(failure) = outcome.failure {
            anyhow::bail!("{scenario} seed {seed} (full-stack) failed {}: {}", failure.check, failure.message);
        }
    }
    let full_stack_seeds_per_second = full_stack_seed_count as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(Ratio {
        scenario,
        fast_seed_count,
        fast_seeds_per_second,
        full_stack_seed_count,
        full_stack_seeds_per_second,
        fast_over_full_stack: fast_seeds_per_second / full_stack_seeds_per_second.max(1e-9),
    })
}
