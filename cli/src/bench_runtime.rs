//! `tempest bench runtime`: the production runtime on a durable SQLite file, measured.
//!
//! The workload is the runtime's `steps` workflow with 3 sequential activities that return a
//! string, with the store on disk in the current directory (WAL, `synchronous=FULL`, group
//! commit), first 64 runs in flight, then one at a time. The headline figures go over HTTP to
//! a `tempest serve` child process (POST /api/runs, then GET /api/runs/{id}?wait_ms), with
//! that process's CPU time (`/proc/PID/stat`, user + system, 100 ticks per second), idle and
//! peak RSS. The same workload then runs in this process through the `RunStore` API, with the
//! SQLite commit count and records per commit. Also measured in the same run: the disk's
//! fsync latency (4 KiB appends with `sync_data` next to the database), and seeds per second of
//! hello_llm in the fast simulator and in the turmoil full-stack mode, one after the other on
//! one thread (`fast_over_full_stack` is their ratio). It prints only what it measured.

use serde::Serialize;
use serde_json::json;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempest_runtime::client::ApiClient;
use tempest_runtime::services::{LlmBackend, MockLlm};
use tempest_runtime::{builtin, host, sqlite, Host, RunStore};

const RUNS_PER_SECOND_CONCURRENT_GOAL: f64 = 3_000.0;
const RUNS_PER_SECOND_SEQUENTIAL_GOAL: f64 = 500.0;
const IDLE_RSS_MIB_GOAL: f64 = 30.0;
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

pub(crate) struct Config {
    pub(crate) concurrent_run_count: usize,
    pub(crate) in_flight: usize,
    pub(crate) sequential_run_count: usize,
    pub(crate) warm_up_run_count: usize,
    pub(crate) fsync_sample_count: usize,
    /// Seeds of hello_llm timed in the fast simulator, then in the full-stack mode.
    pub(crate) fast_seed_count: u64,
    pub(crate) full_stack_seed_count: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            concurrent_run_count: 20_000,
            in_flight: 64,
            sequential_run_count: 2_000,
            warm_up_run_count: 500,
            fsync_sample_count: 200,
            fast_seed_count: 500,
            full_stack_seed_count: 50,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    build: &'static str,
    workflow: &'static str,
    /// How the headline figures were measured.
    path: &'static str,
    in_flight: usize,
    concurrent_run_count: usize,
    sequential_run_count: usize,
    runs_per_second_concurrent: f64,
    runs_per_second_concurrent_goal: f64,
    runs_per_second_sequential: f64,
    runs_per_second_sequential_goal: f64,
    p50_ms_concurrent: f64,
    p99_ms_concurrent: f64,
    p50_ms_sequential: f64,
    p99_ms_sequential: f64,
    /// CPU time (user + system) of the server process per run.
    server_cpu_ms_per_run_concurrent: Option<f64>,
    server_cpu_ms_per_run_sequential: Option<f64>,
    server_peak_rss_mib: Option<f64>,
    /// CPU time of the bench's own HTTP client per run: it shares the machine's cores with
    /// the server, so the server's share of them is what is left.
    client_cpu_ms_per_run_concurrent: Option<f64>,
    /// The 1-minute load average when the bench started: figures taken on a busy machine
    /// are not comparable with the goals.
    load_average_at_start: Option<f64>,
    /// RSS of the server process after it started, before any request.
    idle_rss_mib: Option<f64>,
    idle_rss_mib_goal: f64,
    /// The same workload through the `RunStore` API in this process (no HTTP).
    inprocess_runs_per_second_concurrent: f64,
    inprocess_runs_per_second_sequential: f64,
    inprocess_p50_ms_concurrent: f64,
    inprocess_p99_ms_concurrent: f64,
    inprocess_p50_ms_sequential: f64,
    inprocess_p99_ms_sequential: f64,
    inprocess_cpu_ms_per_run_concurrent: Option<f64>,
    inprocess_cpu_ms_per_run_sequential: Option<f64>,
    inprocess_peak_rss_mib: Option<f64>,
    /// Median of 4 KiB append + fdatasync next to the database.
    fsync_ms: f64,
    fsync_ms_p99: f64,
    /// SQLite commits in the in-process concurrent phase, records per commit (group commit)
    /// and the mean time of one commit.
    sqlite_commit_count_concurrent: u64,
    sqlite_records_per_commit_concurrent: f64,
    sqlite_commit_ms_mean_concurrent: f64,
    /// Fast-simulator seeds/s over full-stack (turmoil) seeds/s of the same scenario.
    fast_over_full_stack: Option<f64>,
    /// The two figures behind the ratio.
    full_stack: crate::full_stack::Ratio,
}

struct Phase {
    seconds: f64,
    latencies_ms: Vec<f64>,
    cpu_seconds: Option<f64>,
    /// CPU time of this process (the client) in the phase.
    client_cpu_seconds: Option<f64>,
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// User + system CPU time of process `pid` (or `self`), in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / CLOCK_TICKS_PER_SECOND)
}

/// A `VmXXX:` figure of `/proc/PID/status`, in MiB.
fn status_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// fdatasync latency of this disk: 4 KiB appends, each synced.
fn fsync_latencies_ms(dir: &Path, count: usize) -> io::Result<Vec<f64>> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let block = vec![0x5a_u8; 4096];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        file.write_all(&block)?;
        let started = Instant::now();
        file.sync_data()?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    std::fs::remove_file(&path)?;
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// A `tempest serve` child on a fresh database in `dir`, and its URL.
fn spawn_server(dir: &Path) -> anyhow::Result<(std::process::Child, String)> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--db"])
        .arg(dir.join("server.db"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line)?;
    }
    match line.split_whitespace().find(|word| word.starts_with("http://")) {
        Some(url) => Ok((child, url.to_owned())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("tempest serve did not say where it listens: {line:?}")
        }
    }
}

/// Runs `run_count` runs, `in_flight` at a time, each through `one_run(workflow_id)`, and
/// times them; CPU time is that of process `pid` (`self` or the server's).
async fn run_phase<F, Fut>(pid: &str, prefix: &str, run_count: usize, in_flight: usize, one_run: F) -> Phase
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(run_count)));
    let cpu_before = cpu_seconds(pid);
    let client_cpu_before = cpu_seconds("self");
    let started = Instant::now();
    let mut drivers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (next, latencies, prefix, one_run) = (next.clone(), latencies.clone(), prefix.to_owned(), one_run.clone());
        drivers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= run_count {
                    return Ok::<(), String>(());
                }
                let run_started = Instant::now();
                one_run(format!("{prefix}-{index}")).await?;
                let ms = run_started.elapsed().as_secs_f64() * 1000.0;
                latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ms);
            }
        });
    }
    while let Some(joined) = drivers.join_next().await {
        if let Err(message) = joined.expect("bench driver") {
            panic!("bench run failed: {message}");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let client_cpu_seconds = client_cpu_before.zip(cpu_seconds("self")).map(|(before, after)| after - before);
    let cpu_seconds = cpu_before.zip(cpu_seconds(pid)).map(|(before, after)| after - before);
    let mut latencies_ms = std::mem::take(&mut *latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    latencies_ms.sort_by(f64::total_cmp);
    Phase { seconds, latencies_ms, cpu_seconds, client_cpu_seconds }
}

fn in_process_run(store: Arc<dyn RunStore>) -> impl Fn(String) -> BoxedRun + Clone + Send + 'static {
    move |workflow_id: String| {
        let store = store.clone();
        Box::pin(async move {
            let input = json!({ "step_count": 3 });
            store.start(host::now(), &workflow_id, builtin::WORKFLOW_TYPE, input).await.map_err(|e| e.to_string())?;
            let view = store.wait_closed(&workflow_id).await.map_err(|e| e.to_string())?;
            match view.map(|v| v.status) {
                Some("completed") => Ok(()),
                other => Err(format!("run {workflow_id} ended {other:?}")),
            }
        }) as BoxedRun
    }
}

fn http_run(client: ApiClient) -> impl Fn(String) -> BoxedRun + Clone + Send + 'static {
    move |workflow_id: String| {
        let client = client.clone();
        Box::pin(async move {
            let input = json!({ "step_count": 3 });
            let started =
                client.start(builtin::WORKFLOW_TYPE, &workflow_id, &input).await.map_err(|e| e.to_string())?;
            if !started.is_success() {
                return Err(format!("start {workflow_id}: {}", started.error_message()));
            }
            let shown = client.wait(&workflow_id, 60_000).await.map_err(|e| e.to_string())?;
            match shown.body["status"].as_str() {
                Some("completed") => Ok(()),
                other => Err(format!("run {workflow_id} is {other:?} after waiting")),
            }
        }) as BoxedRun
    }
}

type BoxedRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

pub(crate) fn run(config: &Config) -> anyhow::Result<Report> {
    let dir = PathBuf::from(format!("tempest-bench-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(config, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(config: &Config, dir: &Path) -> anyhow::Result<Report> {
    let load_average_at_start = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|loadavg| loadavg.split_whitespace().next().and_then(|load| load.parse().ok()));
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    // Over HTTP, against a `tempest serve` process, as a user's client would run them.
    let (mut server, url) = spawn_server(dir)?;
    let pid = server.id().to_string();
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_mib = status_mib(&pid, "VmRSS:");
    let client = ApiClient::new(&url, None)?;
    let http = io.block_on(async {
        run_phase(&pid, "warm-up", config.warm_up_run_count, config.in_flight, http_run(client.clone())).await;
        let concurrent =
            run_phase(&pid, "concurrent", config.concurrent_run_count, config.in_flight, http_run(client.clone()))
                .await;
        let sequential = run_phase(&pid, "sequential", config.sequential_run_count, 1, http_run(client.clone())).await;
        (concurrent, sequential)
    });
    let server_peak_rss_mib = status_mib(&pid, "VmHWM:");
    let _ = server.kill();
    let _ = server.wait();

    // In this process, through the `RunStore` API: the runtime without HTTP.
    let (store, journal) = io.block_on(sqlite::open_store(&dir.join("bench.db"), Default::default()))?;
    let store: Arc<dyn RunStore> = Arc::new(store);
    let (registry, activities) = crate::serve::workflows();
    let llm = Box::new(|| Rc::new(MockLlm::new(0)) as Rc<dyn LlmBackend>);
    let host = Host::start(store.clone(), host::Config::new(registry, activities, llm), None)?;
    let run = in_process_run(store.clone());
    io.block_on(run_phase("self", "warm-up", config.warm_up_run_count, config.in_flight, run.clone()));
    let commits_before = journal.stats().commit_count.load(Ordering::Relaxed);
    let records_before = journal.stats().record_count.load(Ordering::Relaxed);
    let commit_us_before = journal.stats().commit_us_total.load(Ordering::Relaxed);
    let concurrent =
        io.block_on(run_phase("self", "concurrent", config.concurrent_run_count, config.in_flight, run.clone()));
    let commit_count = journal.stats().commit_count.load(Ordering::Relaxed) - commits_before;
    let record_count = journal.stats().record_count.load(Ordering::Relaxed) - records_before;
    let commit_us = journal.stats().commit_us_total.load(Ordering::Relaxed) - commit_us_before;
    let sequential = io.block_on(run_phase("self", "sequential", config.sequential_run_count, 1, run));
    host.stop();

    let fsync = fsync_latencies_ms(dir, config.fsync_sample_count)?;
    crate::simulate::install_quiet_panic_hook();
    let full_stack = crate::full_stack::measure_ratio(config.fast_seed_count, config.full_stack_seed_count)?;
    let per_run = |phase: &Phase, count: usize| phase.cpu_seconds.map(|s| s * 1000.0 / count as f64);
    let (http_concurrent, http_sequential) = http;
    Ok(Report {
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        workflow: "steps: 3 sequential activities returning a string",
        path: "HTTP (POST /api/runs, GET /api/runs/{id}?wait_ms) against a tempest serve process; \
               SQLite on disk, WAL, synchronous=FULL",
        in_flight: config.in_flight,
        concurrent_run_count: config.concurrent_run_count,
        sequential_run_count: config.sequential_run_count,
        runs_per_second_concurrent: config.concurrent_run_count as f64 / http_concurrent.seconds,
        runs_per_second_concurrent_goal: RUNS_PER_SECOND_CONCURRENT_GOAL,
        runs_per_second_sequential: config.sequential_run_count as f64 / http_sequential.seconds,
        runs_per_second_sequential_goal: RUNS_PER_SECOND_SEQUENTIAL_GOAL,
        p50_ms_concurrent: percentile(&http_concurrent.latencies_ms, 0.5),
        p99_ms_concurrent: percentile(&http_concurrent.latencies_ms, 0.99),
        p50_ms_sequential: percentile(&http_sequential.latencies_ms, 0.5),
        p99_ms_sequential: percentile(&http_sequential.latencies_ms, 0.99),
        server_cpu_ms_per_run_concurrent: per_run(&http_concurrent, config.concurrent_run_count),
        server_cpu_ms_per_run_sequential: per_run(&http_sequential, config.sequential_run_count),
        server_peak_rss_mib,
        client_cpu_ms_per_run_concurrent: http_concurrent
            .client_cpu_seconds
            .map(|s| s * 1000.0 / config.concurrent_run_count as f64),
        load_average_at_start,
        idle_rss_mib,
        idle_rss_mib_goal: IDLE_RSS_MIB_GOAL,
        inprocess_runs_per_second_concurrent: config.concurrent_run_count as f64 / concurrent.seconds,
        inprocess_runs_per_second_sequential: config.sequential_run_count as f64 / sequential.seconds,
        inprocess_p50_ms_concurrent: percentile(&concurrent.latencies_ms, 0.5),
        inprocess_p99_ms_concurrent: percentile(&concurrent.latencies_ms, 0.99),
        inprocess_p50_ms_sequential: percentile(&sequential.latencies_ms, 0.5),
        inprocess_p99_ms_sequential: percentile(&sequential.latencies_ms, 0.99),
        inprocess_cpu_ms_per_run_concurrent: per_run(&concurrent, config.concurrent_run_count),
        inprocess_cpu_ms_per_run_sequential: per_run(&sequential, config.sequential_run_count),
        inprocess_peak_rss_mib: status_mib("self", "VmHWM:"),
        fsync_ms: percentile(&fsync, 0.5),
        fsync_ms_p99: percentile(&fsync, 0.99),
        sqlite_commit_count_concurrent: commit_count,
        sqlite_records_per_commit_concurrent: record_count as f64 / commit_count.max(1) as f64,
        sqlite_commit_ms_mean_concurrent: commit_us as f64 / 1000.0 / commit_count.max(1) as f64,
        fast_over_full_stack: Some(full_stack.fast_over_full_stack),
        full_stack,
    })
}

impl Report {
    pub(crate) fn write_summary(&self, out: &mut impl Write) -> io::Result<()> {
        let optional = |value: Option<f64>, unit: &str| {
            value.map_or_else(|| "not measured".to_owned(), |v| format!("{v:.2} {unit}"))
        };
        writeln!(out, "bench runtime ({} build): {}", self.build, self.workflow)?;
        if let Some(load) = self.load_average_at_start {
            writeln!(out, "  load average at start: {load:.2} on {} cores", crate::core_count())?;
        }
        writeln!(out, "  over HTTP against a tempest serve process (SQLite on disk, WAL, synchronous=FULL):")?;
        writeln!(
            out,
            "    {} in flight: {:.0} runs/s (goal {:.0}), p50 {:.2} ms, p99 {:.2} ms, server CPU {} per run \
             (client CPU {} per run)",
            self.in_flight,
            self.runs_per_second_concurrent,
            self.runs_per_second_concurrent_goal,
            self.p50_ms_concurrent,
            self.p99_ms_concurrent,
            optional(self.server_cpu_ms_per_run_concurrent, "ms"),
            optional(self.client_cpu_ms_per_run_concurrent, "ms"),
        )?;
        writeln!(
            out,
            "    sequential: {:.0} runs/s (goal {:.0}), p50 {:.2} ms, p99 {:.2} ms, server CPU {} per run",
            self.runs_per_second_sequential,
            self.runs_per_second_sequential_goal,
            self.p50_ms_sequential,
            self.p99_ms_sequential,
            optional(self.server_cpu_ms_per_run_sequential, "ms"),
        )?;
        writeln!(
            out,
            "    server RSS: idle {} (goal {:.0} MiB), peak {}",
            optional(self.idle_rss_mib, "MiB"),
            self.idle_rss_mib_goal,
            optional(self.server_peak_rss_mib, "MiB"),
        )?;
        writeln!(out, "  in this process through the RunStore API (no HTTP):")?;
        writeln!(
            out,
            "    {} in flight: {:.0} runs/s, p50 {:.2} ms, p99 {:.2} ms, CPU {} per run",
            self.in_flight,
            self.inprocess_runs_per_second_concurrent,
            self.inprocess_p50_ms_concurrent,
            self.inprocess_p99_ms_concurrent,
            optional(self.inprocess_cpu_ms_per_run_concurrent, "ms"),
        )?;
        writeln!(
            out,
            "    sequential: {:.0} runs/s, p50 {:.2} ms, p99 {:.2} ms, CPU {} per run; peak RSS {}",
            self.inprocess_runs_per_second_sequential,
            self.inprocess_p50_ms_sequential,
            self.inprocess_p99_ms_sequential,
            optional(self.inprocess_cpu_ms_per_run_sequential, "ms"),
            optional(self.inprocess_peak_rss_mib, "MiB"),
        )?;
        writeln!(
            out,
            "    group commit: {} commits, {:.1} records per commit, {:.2} ms per commit",
            self.sqlite_commit_count_concurrent,
            self.sqlite_records_per_commit_concurrent,
            self.sqlite_commit_ms_mean_concurrent
        )?;
        writeln!(
            out,
            "  fsync: p50 {:.3} ms, p99 {:.3} ms (4 KiB append + fdatasync)",
            self.fsync_ms, self.fsync_ms_p99
        )?;
        let ratio = &self.full_stack;
        writeln!(
            out,
            "  {} seeds/s on one thread: fast simulator {:.0} ({} seeds), full-stack over turmoil {:.1} ({} seeds); \
             fast_over_full_stack {:.0}",
            ratio.scenario,
            ratio.fast_seeds_per_second,
            ratio.fast_seed_count,
            ratio.full_stack_seeds_per_second,
            ratio.full_stack_seed_count,
            ratio.fast_over_full_stack,
        )
    }
}
