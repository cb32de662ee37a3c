//! The `tempest` command line: parses arguments, runs one command and turns its outcome into
//! the exit code (0 all good, 1 a check or replay failed, 2 bad usage or input).
//!
//! Results go to stdout, errors to stderr. This file is the only place that uses `anyhow`: the
//! commands return their own outcomes and errors. Commands whose issue has not landed parse
//! their documented flags and then say so; they never print made-up results.

// The simulator allocates many small objects per step; see ARCHITECTURE.md, "Allocator".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_runtime;
mod bench_sim;
mod debug;
mod fork;
mod full_stack;
mod replay;
mod report;
mod serve;
mod simulate;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How a command ended. Ordered by severity, so several files combine with `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// Everything checked out.
    Ok,
    /// A check or a replay failed.
    Failed,
    /// Bad usage or bad input: a missing, unreadable or malformed file, an unknown name.
    BadInput,
}

impl Outcome {
    fn exit_code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::BadInput => 2,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "tempest",
    version,
    about = "Durable execution for AI workflows, tested to destruction in a seeded simulator",
    after_help = "Exit codes: 0 all good, 1 a check or replay failed, 2 bad usage or input."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List scenarios: name and one line each
    Scenarios,
    /// Run one world: prints outcome, fault counts and trace digest
    Run(RunArgs),
    /// Run many seeds: progress, summary, a repro line and shrunk plan per failing seed
    Sweep(SweepArgs),
    /// Replay recorded histories against today's workflow code
    Replay(ReplayArgs),
    /// Step through a history in the terminal
    Debug(DebugArgs),
    /// Render a history's timeline as one HTML page
    Report(ReportArgs),
    /// Run workflows durably on this machine (SQLite, HTTP API)
    Serve(ServeArgs),
    /// Start a run on a server (idempotent by --id)
    Start(StartArgs),
    /// Send a signal to a run on a server
    Signal(SignalArgs),
    /// Show a run on a server, or its history
    Show(ShowArgs),
    /// Fork a recorded run at an event and run it on under other faults or answers
    Fork(ForkArgs),
    /// Benchmarks
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario name (see `tempest scenarios`)
    scenario: String,
    /// The seed of the world, decimal or 0x-prefixed hex
    #[arg(long, value_parser = parse_seed)]
    seed: u64,
    /// Write every run's history into this directory
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Replay this fault plan (JSON, as written by a failing sweep) instead of drawing one
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// Print the world's log, one line per event (filter with RUST_LOG, e.g. tempest=trace)
    #[arg(long)]
    trace: bool,
    /// Run every check after every step, not only at the end (slower; names the step)
    #[arg(long)]
    check_every_step: bool,
    /// fast: the simulator; full-stack: the runtime's real network code over turmoil
    #[arg(long, value_enum, default_value = "fast")]
    mode: full_stack::Mode,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["scenario", "all"])))]
struct SweepArgs {
    /// Scenario name (see `tempest scenarios`)
    scenario: Option<String>,
    /// Sweep every scenario
    #[arg(long)]
    all: bool,
    /// How many seeds to run per scenario
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// First seed, in hex (a commit hash prefix works: `$(git rev-parse --short HEAD)`)
    #[arg(long, value_name = "S", value_parser = parse_hex, default_value = "0")]
    seed_base: u64,
    /// Worlds run in parallel (default: one per core)
    #[arg(long, value_name = "J", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Also write the summary as JSON to this file
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// fast: the simulator; full-stack: the runtime's real network code over turmoil
    #[arg(long, value_enum, default_value = "fast")]
    mode: full_stack::Mode,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// History files, or directories whose `.json` files are all replayed
    #[arg(required = true, value_name = "FILE|DIR")]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct DebugArgs {
    /// History file
    file: PathBuf,
    /// Print the detail and state panes of this 0-based event as text instead
    #[arg(long, value_name = "N")]
    at: Option<u64>,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// History file, directory of histories (with their fault logs), or sweep summary JSON
    #[arg(value_name = "FILE|DIR")]
    file: PathBuf,
    /// The HTML page to write
    #[arg(short = 'o', long = "output", value_name = "OUT.html")]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// SQLite database file
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Address of the HTTP API and web page, e.g. 127.0.0.1:8080
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The LLM backend of the built-in workflows
    #[arg(long, value_enum, default_value = "mock")]
    llm: serve::LlmChoice,
    /// Log lines as text or as JSON objects (stderr)
    #[arg(long, value_enum, default_value = "text")]
    log_format: serve::LogFormat,
    /// Mock LLM: percent of distinct requests that fail once as overloaded (tests retries)
    #[arg(long, hide = true, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    mock_llm_failure_percent: u64,
}

#[derive(Debug, Args)]
struct ServerArg {
    /// The server's URL
    #[arg(long, value_name = "URL", default_value = serve::DEFAULT_SERVER)]
    server: String,
}

#[derive(Debug, Args)]
struct StartArgs {
    /// Workflow type (the built-in ones are the scenario names and `steps`)
    workflow_type: String,
    /// Workflow id; starting the same id again returns the same run
    #[arg(long, value_name = "ID")]
    id: String,
    /// The run's input, as JSON
    #[arg(long, value_name = "JSON", default_value = "null")]
    input: String,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, Args)]
struct SignalArgs {
    /// Workflow id
    workflow_id: String,
    /// Signal name
    name: String,
    /// The signal's payload, as JSON
    #[arg(long, value_name = "JSON", default_value = "null")]
    payload: String,
    /// Signal id; sending the same id again is the same signal (default: a fresh one)
    #[arg(long, value_name = "S")]
    signal_id: Option<String>,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// Workflow id
    workflow_id: String,
    /// Print the latest run's history (tempest-history/1, readable by `tempest replay`)
    #[arg(long)]
    history: bool,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, Args)]
struct ForkArgs {
    /// History file of the run to fork
    file: PathBuf,
    /// Keep the first N events (those before 0-based index N); the fork runs on from there
    #[arg(long, value_name = "N")]
    at: u64,
    /// How many seeds to continue under, each with its drawn fault plan
    #[arg(long, value_name = "K", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// First seed, in hex
    #[arg(long, value_name = "S", value_parser = parse_hex, default_value = "0")]
    seed_base: u64,
    /// Continue in one world under this fault plan (JSON) instead, with seed --seed-base
    #[arg(long, value_name = "FILE", conflicts_with = "seeds")]
    plan: Option<PathBuf>,
    /// Also write the summary as JSON to this file
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Write every forked world's histories into this directory
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// What to measure
    target: BenchTarget,
    /// Also write the figures as a JSON object to this file
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// engine: events in the replayed history
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    replay_events: u64,
    /// engine, sim: runs started and left waiting on a signal [default: 100000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    waiting_runs: Option<u64>,
    /// sim: agent_loop seeds timed on one core, then on all cores
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// sim: threads of the all-cores figures (default: one per core)
    #[arg(long, value_name = "J", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchTarget {
    /// The pure engine: replay speed and memory per waiting run
    Engine,
    /// The simulator: worlds per second
    Sim,
    /// The production runtime
    Runtime,
}

/// Seeds are decimal, or hex with a `0x` prefix.
fn parse_seed(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|e| format!("not a hex seed: {e}")),
        None => text.parse().map_err(|e| format!("not a seed (decimal, or hex with 0x): {e}")),
    }
}

/// Seed bases are always hex, so a commit hash prefix of only digits still reads as hex.
fn parse_hex(text: &str) -> Result<u64, String> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(hex, 16).map_err(|e| format!("not a hex number of at most 16 digits: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(error) => {
            eprintln!("tempest: {error:#}");
            ExitCode::from(Outcome::BadInput.exit_code())
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Replay(args) => {
            let registry = tempest_scenarios::registry();
            let stderr = std::io::stderr();
            let outcome = replay::run(&registry, &args.paths, &mut out, &mut stderr.lock())?;
            Ok(outcome)
        }
        Command::Bench(args) => match args.target {
            BenchTarget::Engine => bench_engine(&args, &mut out),
            BenchTarget::Sim => bench_sim(&args, &mut out),
            BenchTarget::Runtime => bench_runtime(&args, &mut out),
        },
        Command::Scenarios => simulate::list(&mut out),
        Command::Run(args) if args.mode == full_stack::Mode::FullStack => {
            full_stack::refuse_flag(args.plan.is_some(), "--plan")?;
            full_stack::refuse_flag(args.trace, "--trace")?;
            full_stack::refuse_flag(args.check_every_step, "--check-every-step")?;
            full_stack::run(&args.scenario, args.seed, args.record.as_deref(), &mut out)
        }
        Command::Run(args) => simulate::run(
            simulate::RunRequest {
                scenario: &args.scenario,
                seed: args.seed,
                record: args.record.as_deref(),
                plan: args.plan.as_deref(),
                trace: args.trace,
                check_every_step: args.check_every_step,
            },
            &mut out,
        ),
        Command::Sweep(args) => {
            let request = simulate::SweepRequest {
                scenario: args.scenario.as_deref(),
                seed_count: args.seeds,
                seed_base: args.seed_base,
                jobs: args.jobs,
                json: args.json.as_deref(),
            };
            match args.mode {
                full_stack::Mode::FullStack => full_stack::sweep(request, &mut out),
                full_stack::Mode::Fast => simulate::sweep(request, &mut out),
            }
        }
        Command::Debug(args) => {
            match args.at {
                Some(at) => debug::print_at(&args.file, at, &mut out)?,
                None => debug::interactive(&args.file)?,
            }
            Ok(Outcome::Ok)
        }
        Command::Report(args) => {
            let what = report::run(&args.file, &args.output)?;
            writeln!(out, "wrote {} ({what})", args.output.display())?;
            Ok(Outcome::Ok)
        }
        Command::Serve(args) => {
            let db = args.db.unwrap_or_else(|| PathBuf::from("tempest.db"));
            let listen = match args.listen {
                Some(listen) => listen,
                None => serve::DEFAULT_LISTEN.parse()?,
            };
            let request = serve::ServeRequest {
                db: &db,
                listen,
                llm: args.llm,
                log_format: args.log_format,
                mock_failure_percent: args.mock_llm_failure_percent,
            };
            serve::serve(request, &mut out)
        }
        Command::Start(args) => serve::client(
            &args.server.server,
            serve::ClientCommand::Start {
                workflow_type: &args.workflow_type,
                workflow_id: &args.id,
                input: &args.input,
            },
            &mut out,
        ),
        Command::Signal(args) => serve::client(
            &args.server.server,
            serve::ClientCommand::Signal {
                workflow_id: &args.workflow_id,
                name: &args.name,
                payload: &args.payload,
                signal_id: args.signal_id.as_deref(),
            },
            &mut out,
        ),
        Command::Show(args) => serve::client(
            &args.server.server,
            serve::ClientCommand::Show { workflow_id: &args.workflow_id, history: args.history },
            &mut out,
        ),
        Command::Fork(args) => fork_command(&args, &mut out),
    }
}

fn bench_engine(args: &BenchArgs, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let config = bench::Config {
        replay_event_count: usize::try_from(args.replay_events)?,
        waiting_run_count: usize::try_from(args.waiting_runs.unwrap_or(100_000))?,
        ..bench::Config::default()
    };
    let report = bench::run(&config);
    report.write_summary(out)?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(Outcome::Ok)
}

fn bench_sim(args: &BenchArgs, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let defaults = bench_sim::Config::default();
    let config = bench_sim::Config {
        seed_count: args.seeds,
        waiting_run_count: match args.waiting_runs {
            Some(count) => usize::try_from(count)?,
            None => defaults.waiting_run_count,
        },
        jobs: match args.jobs {
            Some(jobs) => usize::try_from(jobs)?,
            None => defaults.jobs,
        },
        ..defaults
    };
    // Seeds that panic are counted as failed; their messages would only interleave the figures.
    simulate::install_quiet_panic_hook();
    let report = match bench_sim::run(&config) {
        Ok(report) => report,
        Err(error) => {
            // A bench world that fails its own checks has no figures worth printing.
            eprintln!("tempest bench sim: {error}");
            return Ok(Outcome::Failed);
        }
    };
    report.write_summary(out)?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(Outcome::Ok)
}

fn fork_command(args: &ForkArgs, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let timeline = debug::load(&args.file)?;
    let plan = match &args.plan {
        Some(path) => Some((path.as_path(), simulate::read_plan(path)?)),
        None => None,
    };
    let worlds = match plan {
        Some((path, plan)) => fork::Worlds::Plan { seed: args.seed_base, plan: Box::new(plan), path },
        None => fork::Worlds::Seeds { base: args.seed_base, count: args.seeds },
    };
    let request = fork::Request {
        history: &timeline.history,
        file: &args.file,
        at: args.at,
        worlds,
        keep_histories: args.record.is_some(),
    };
    let summary = fork::run(request).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    fork::write_summary(&summary, out)?;
    if let Some(dir) = &args.record {
        let count = fork::record(&summary, dir)?;
        writeln!(out, "recorded {count} histories in {}", dir.display())?;
    }
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    Ok(fork::exit(&summary))
}

fn bench_runtime(args: &BenchArgs, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let config = bench_runtime::Config::default();
    let report = bench_runtime::run(&config)?;
    report.write_summary(out)?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(Outcome::Ok)
}

/// The cores this process may use: the default number of jobs of sweeps and benches.
fn core_count() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tempest").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_documented_command_parses_its_flags() {
        let lines: &[&[&str]] = &[
            &["scenarios"],
            &["run", "hello_llm", "--seed", "42", "--record", "out", "--plan", "p.json"],
            &["run", "hello_llm", "--seed", "0x2a"],
            &["sweep", "--all", "--seeds", "1000"],
            &["sweep", "hello_llm", "--seeds", "2000", "--seed-base", "a1e2468", "--jobs", "2", "--json", "s.json"],
            &["replay", "a.json", "dir"],
            &["debug", "a.json"],
            &["report", "a.json", "-o", "a.html"],
            &["serve", "--db", "t.db", "--listen", "127.0.0.1:8080"],
            &["serve"],
            &["fork", "a.json", "--at", "7", "--seeds", "3", "--seed-base", "a1", "--json", "f.json", "--record", "d"],
            &["fork", "a.json", "--at", "7", "--plan", "p.json"],
            &["debug", "a.json", "--at", "3"],
            &["report", "dir", "-o", "a.html"],
            &["serve", "--llm", "mock", "--log-format", "json"],
            &["start", "hello_llm", "--id", "h1", "--input", "{}", "--server", "http://127.0.0.1:9"],
            &["signal", "h1", "approval", "--payload", "{}", "--signal-id", "s1"],
            &["show", "h1", "--history"],
            &["bench", "engine", "--json", "b.json"],
            &["bench", "sim"],
            &["bench", "sim", "--json", "b.json", "--seeds", "200", "--jobs", "2", "--waiting-runs", "1000"],
            &["bench", "runtime", "--json", "b.json"],
            &["run", "steps", "--seed", "3", "--mode", "full-stack"],
            &["sweep", "--all", "--seeds", "10", "--mode", "full-stack", "--jobs", "2", "--json", "s.json"],
            &["sweep", "hello_llm", "--seeds", "10", "--mode", "fast"],
        ];
        for line in lines {
            if let Err(error) = parse(line) {
                panic!("{line:?} does not parse: {error}");
            }
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        let lines: &[&[&str]] = &[
            &[],
            &["frobnicate"],
            &["run", "hello_llm"],
            &["run", "hello_llm", "--seed", "x"],
            &["sweep", "--seeds", "10"],
            &["sweep", "hello_llm", "--all", "--seeds", "10"],
            &["sweep", "--all", "--seeds", "0"],
            &["sweep", "--all", "--seeds", "10", "--seed-base", "xyz"],
            &["replay"],
            &["report", "a.json"],
            &["fork", "a.json"],
            &["fork", "a.json", "--at", "1", "--seeds", "0"],
            &["fork", "a.json", "--at", "1", "--seeds", "5", "--plan", "p.json"],
            &["debug", "a.json", "--at", "-1"],
            &["serve", "--listen", "not-an-address"],
            &["serve", "--llm", "gpt"],
            &["start", "hello_llm"],
            &["signal", "h1"],
            &["bench", "everything"],
            &["run", "hello_llm", "--seed", "1", "--mode", "bogus"],
            &["sweep", "--all", "--seeds", "10", "--mode", "bogus"],
        ];
        for line in lines {
            match parse(line) {
                Ok(cli) => panic!("{line:?} parsed as {cli:?}"),
                Err(error) => assert_eq!(error.exit_code(), 2, "{line:?}: {error}"),
            }
        }
    }

    #[test]
    fn seed_base_is_hex_even_when_all_digits() {
        assert_eq!(parse_hex("1234"), Ok(0x1234));
        assert_eq!(parse_hex("0xff"), Ok(255));
        assert_eq!(parse_seed("1234"), Ok(1234));
        assert_eq!(parse_seed("0x10"), Ok(16));
    }
}
