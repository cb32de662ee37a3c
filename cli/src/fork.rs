//! `tempest fork`: a recorded run's first N events taken as fixed, continued in the simulator
//! under many seeds (or one fault plan), with every check on.
//!
//! Owns choosing the scenario whose code runs the forked workflow, building each world from
//! the prefix (through `Options::seeded_histories`, so the store restores it by its recovery
//! path), sorting the forked run's endings into a distribution, and the summary people and
//! scripts read (text, `--json`, a repro line per failing seed). It never changes the recorded
//! file, and never decides a world's outcome: the simulator does.

use crate::Outcome as Exit;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tempest_engine::history::{History, Kind};
use tempest_engine::Time;
use tempest_sim::scenario::Start;
use tempest_sim::world::{self, Options};
use tempest_sim::{FaultPlan, Scenario};

/// Why a fork cannot start (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("--at {at}: a fork keeps the first N events and needs at least workflow_started, so N is 1..={len}")]
    AtZero { at: u64, len: usize },
    #[error("--at {at} is beyond the history: it has {len} events, so N is 1..={len}")]
    Beyond { at: u64, len: usize },
    #[error("no scenario of this build runs workflow type {workflow_type:?} (scenarios: {known})")]
    NoScenario { workflow_type: String, known: String },
    #[error("run {run_id} is {what}; forks start from a workflow's first run, started by a client")]
    NotAFirstRun { run_id: String, what: &'static str },
}

/// Which worlds the fork runs in.
pub(crate) enum Worlds<'a> {
    /// `count` seeds from `base`, each with the fault plan drawn from its seed.
    Seeds { base: u64, count: u64 },
    /// One world: seed `seed` with the plan read from `path`.
    Plan { seed: u64, plan: Box<FaultPlan>, path: &'a Path },
}

pub(crate) struct Request<'a> {
    pub(crate) history: &'a History,
    /// The history's file, for repro lines.
    pub(crate) file: &'a Path,
    pub(crate) at: u64,
    pub(crate) worlds: Worlds<'a>,
    /// Keep every world's histories (for `--record`).
    pub(crate) keep_histories: bool,
}

/// How many worlds ended the forked run one way.
#[derive(Debug, Serialize)]
pub(crate) struct Ending {
    pub(crate) ending: String,
    pub(crate) count: u64,
    /// The first few seeds that ended this way.
    pub(crate) seeds: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Failure {
    pub(crate) seed: u64,
    pub(crate) check: String,
    pub(crate) message: String,
    pub(crate) repro: String,
}

/// The fork's summary, as printed and as written with `--json`.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) file: String,
    pub(crate) run_id: String,
    pub(crate) workflow_type: String,
    pub(crate) scenario: String,
    /// Events kept from the recording.
    pub(crate) at: u64,
    pub(crate) event_count: usize,
    pub(crate) worlds: u64,
    pub(crate) endings: Vec<Ending>,
    pub(crate) failures: Vec<Failure>,
    /// Every world's histories, by seed, when asked to keep them.
    #[serde(skip)]
    pub(crate) histories: Vec<(u64, Vec<History>)>,
}

const SEEDS_SHOWN_PER_ENDING: usize = 8;

fn scenario_of(workflow_type: &str) -> Result<Box<dyn Scenario>, Error> {
    let scenarios = tempest_scenarios::all();
    let known = scenarios.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ");
    scenarios
        .into_iter()
        .find(|s| s.registry().contains(workflow_type))
        .ok_or_else(|| Error::NoScenario { workflow_type: workflow_type.to_owned(), known })
}

/// Runs the fork; bad requests are errors, failing worlds are in the summary.
pub(crate) fn run(request: Request<'_>) -> Result<Summary, Error> {
    let history = request.history;
    let len = history.events.len();
    if request.at == 0 {
        return Err(Error::AtZero { at: request.at, len });
    }
    let at = usize::try_from(request.at).ok().filter(|at| *at <= len).ok_or(Error::Beyond { at: request.at, len })?;
    let Some(Kind::WorkflowStarted { parent, continued_from, input, .. }) = history.events.first().map(|e| &e.kind)
    else {
        unreachable!("a loaded history starts with workflow_started");
    };
    if parent.is_some() {
        return Err(Error::NotAFirstRun { run_id: history.run_id.clone(), what: "a child run" });
    }
    if continued_from.is_some() {
        return Err(Error::NotAFirstRun { run_id: history.run_id.clone(), what: "continued from another run" });
    }
    let scenario = scenario_of(&history.workflow_type)?;
    let prefix = History { events: history.events[..at].to_vec(), ..history.clone() };
    let began_at = prefix.events.last().map_or(Time::ZERO, |e| e.time_ms);
    // The client asks to start the workflow again when the fork begins: the store answers with
    // the recorded run, and the world then holds it to every check as an accepted start.
    let workload = vec![Start {
        at: began_at,
        workflow_id: history.workflow_id.clone(),
        workflow_type: history.workflow_type.clone(),
        input: input.to_value(),
    }];
    let worlds: Vec<(u64, FaultPlan)> = match &request.worlds {
        Worlds::Seeds { base, count } => {
            (0..*count).map(|i| base.wrapping_add(i)).map(|seed| (seed, FaultPlan::draw(seed))).collect()
        }
        Worlds::Plan { seed, plan, .. } => vec![(*seed, (**plan).clone())],
    };
    let mut endings: BTreeMap<String, (u64, Vec<u64>)> = BTreeMap::new();
    let mut summary = Summary {
        file: request.file.display().to_string(),
        run_id: history.run_id.clone(),
        workflow_type: history.workflow_type.clone(),
        scenario: scenario.name().to_owned(),
        at: request.at,
        event_count: len,
        worlds: worlds.len() as u64,
        endings: Vec::new(),
        failures: Vec::new(),
        histories: Vec::new(),
    };
    for (seed, plan) in worlds {
        let options = Options {
            plan,
            workload: Some(workload.clone()),
            seeded_histories: vec![prefix.clone()],
            keep_histories: true,
            ..Options::swarm(seed)
        };
        let outcome = world::run_catching(scenario.as_ref(), options);
        let ending = ending_of(&history.run_id, &outcome.histories);
        let entry = endings.entry(ending).or_default();
        entry.0 += 1;
        if entry.1.len() < SEEDS_SHOWN_PER_ENDING {
            entry.1.push(seed);
        }
        if let Some(failure) = outcome.failure {
            summary.failures.push(Failure {
                seed,
                check: failure.check,
                message: failure.message,
                repro: repro_line(request.file, request.at, seed, &request.worlds),
            });
        }
        if request.keep_histories {
            summary.histories.push((seed, outcome.histories));
        }
    }
    let mut endings: Vec<Ending> =
        endings.into_iter().map(|(ending, (count, seeds))| Ending { ending, count, seeds }).collect();
    endings.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.ending.cmp(&b.ending)));
    summary.endings = endings;
    Ok(summary)
}

/// How the forked run (or the last run it continued as) ended in one world.
fn ending_of(run_id: &str, histories: &[History]) -> String {
    let mut current = run_id.to_owned();
    loop {
        let Some(history) = histories.iter().find(|h| h.run_id == current) else {
            return "no history: the world stopped before the run was restored".to_owned();
        };
        let Some(last) = history.events.last() else { return "no events".to_owned() };
        return match &last.kind {
            Kind::WorkflowCompleted { output } => format!("completed {}", crate::debug::model::compact(output)),
            Kind::WorkflowFailed { error } => format!("failed: {error}"),
            Kind::WorkflowCanceled => "canceled".to_owned(),
            Kind::WorkflowContinuedAsNew { next_run_id, .. } => {
                current.clone_from(next_run_id);
                continue;
            }
            _ => {
                let state = tempest_engine::RunState::from_events(&history.events).unwrap_or_default();
                let waiting = if state.open_activities().next().is_some() {
                    "an activity"
                } else if state.open_timers().next().is_some() {
                    "a timer"
                } else if state.open_children().next().is_some() {
                    "a child"
                } else {
                    "a signal"
                };
                format!("still waiting on {waiting}")
            }
        };
    }
}

fn repro_line(file: &Path, at: u64, seed: u64, worlds: &Worlds<'_>) -> String {
    let mut line = format!("cargo run --release -- fork {} --at {at} --seeds 1 --seed-base {seed:x}", file.display());
    if let Worlds::Plan { path, .. } = worlds {
        line.push_str(&format!(" --plan {}", path.display()));
    }
    line
}

/// The summary as people read it.
pub(crate) fn write_summary(summary: &Summary, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "fork of {}: run {} ({}), first {} of {} events kept, continued in {} worlds of scenario {}",
        summary.file,
        summary.run_id,
        summary.workflow_type,
        summary.at,
        summary.event_count,
        summary.worlds,
        summary.scenario
    )?;
    writeln!(out, "endings:")?;
    for ending in &summary.endings {
        let seeds: Vec<String> = ending.seeds.iter().map(|s| format!("{s:#x}")).collect();
        let more = if ending.count as usize > ending.seeds.len() { " …" } else { "" };
        writeln!(out, "  {:>6}  {}  (seeds {}{more})", ending.count, ending.ending, seeds.join(" "))?;
    }
    if summary.failures.is_empty() {
        writeln!(out, "checks: all passed in {} worlds", summary.worlds)?;
    } else {
        writeln!(out, "checks: {} of {} worlds FAILED", summary.failures.len(), summary.worlds)?;
        for failure in &summary.failures {
            writeln!(out, "FAILED seed {:#x}: {}: {}", failure.seed, failure.check, failure.message)?;
            writeln!(out, "    rerun with: {}", failure.repro)?;
        }
    }
    Ok(())
}

/// Writes every kept history as `fork-at{N}-seed{S}-{run_id}.json` under `dir`.
pub(crate) fn record(summary: &Summary, dir: &Path) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut count = 0;
    for (seed, histories) in &summary.histories {
        for history in histories {
            let path: PathBuf = dir.join(format!("fork-at{}-seed{seed}-{}.json", summary.at, history.run_id));
            std::fs::write(&path, history.to_json()).with_context(|| format!("cannot write {}", path.display()))?;
            count += 1;
        }
    }
    Ok(count)
}

/// The outcome a summary exits with: a failed check is exit 1.
pub(crate) fn exit(summary: &Summary) -> Exit {
    if summary.failures.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::debug::tests::recorded;

    fn fork(history: &History, at: u64, count: u64) -> Summary {
        let request = Request {
            history,
            file: Path::new("h.json"),
            at,
            worlds: Worlds::Seeds { base: 0, count },
            keep_histories: true,
        };
        run(request).unwrap()
    }

    #[test]
    fn fork_at_every_event_passes_every_check_and_keeps_the_prefix() {
        for scenario in ["hello_llm", "agent_loop", "human_approval"] {
            let history = recorded(scenario, 3);
            for at in 1..=history.events.len() as u64 {
                let summary = fork(&history, at, 2);
                assert!(summary.failures.is_empty(), "{scenario} at {at}: {:?}", summary.failures);
                for (seed, histories) in &summary.histories {
                    let forked = histories.iter().find(|h| h.run_id == history.run_id).expect("the forked run");
                    let kept = &history.events[..at as usize];
                    assert_eq!(&forked.events[..kept.len()], kept, "{scenario} at {at} seed {seed}");
                    let last = forked.events.last().unwrap();
                    assert!(last.kind.is_terminal(), "{scenario} at {at} seed {seed}: ends with {last}");
                }
            }
        }
    }

    #[test]
    fn endings_count_every_world_and_a_full_prefix_ends_as_recorded() {
        let history = recorded("agent_loop", 5);
        let summary = fork(&history, history.events.len() as u64, 3);
        assert_eq!(summary.endings.len(), 1, "{:?}", summary.endings);
        let Some(Kind::WorkflowCompleted { output }) = history.events.last().map(|e| &e.kind) else { panic!() };
        assert_eq!(summary.endings[0].ending, format!("completed {}", crate::debug::model::compact(output)));
        assert_eq!(summary.endings[0].count, 3);
        let summary = fork(&history, 2, 20);
        assert_eq!(summary.endings.iter().map(|e| e.count).sum::<u64>(), 20);
    }

    #[test]
    fn at_zero_or_past_the_end_is_refused() {
        let history = recorded("hello_llm", 1);
        let len = history.events.len() as u64;
        for at in [0, len + 1] {
            let request = Request {
                history: &history,
                file: Path::new("h.json"),
                at,
                worlds: Worlds::Seeds { base: 0, count: 1 },
                keep_histories: false,
            };
            let error = run(request).unwrap_err().to_string();
            assert!(error.contains(&format!("--at {at}")) && error.contains(&format!("1..={len}")), "{error}");
        }
    }
}
