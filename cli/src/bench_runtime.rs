//! `tempest bench runtime`: the production runtime on a durable SQLite file, measured.
//!
//! The workload is the runtime's `steps` workflow with 3 sequential activities that return a
//! string. Runs are started and awaited through the runtime's `RunStore` API in this process
//! (the same calls the HTTP handlers make, without HTTP), with the store on disk in the
//! current directory (WAL, `synchronous=FULL`, group commit), first 64 in flight, then one at
//! a time. Also measured in the same run: the disk's fsync latency (4 KiB appends with
//! `sync_data` next to the database), CPU time per run (`/proc/self/stat`, user + system, at
//! 100 ticks per second), peak RSS of this process (`VmHWM`), and the idle RSS of a separate
//! `tempest serve` process. It prints only what it measured; `fast_over_full_stack` is `null`
//! until the turmoil full-stack mode exists.

use serde::Serialize;
use serde_json::json;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            concurrent_run_count: 20_000,
            in_flight: 64,
            sequential_run_count: 2_000,
            warm_up_run_count: 500,
            fsync_sample_count: 200,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    build: &'static str,
    workflow: &'static str,
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
    cpu_ms_per_run_concurrent: Option<f64>,
    cpu_ms_per_run_sequential: Option<f64>,
    peak_rss_mib: Option<f64>,
    idle_rss_mib: Option<f64>,
    idle_rss_mib_goal: f64,
    /// Median of 4 KiB append + fdatasync next to the database.
    fsync_ms: f64,
    fsync_ms_p99: f64,
    /// SQLite commits during the concurrent phase, and records per commit (group commit).
    sqlite_commit_count_concurrent: u64,
    sqlite_records_per_commit_concurrent: f64,
    sqlite_commit_ms_mean: f64,
    /// Fast-simulator seeds/s over full-stack (turmoil) seeds/s: null, no full-stack mode yet.
    fast_over_full_stack: Option<f64>,
}

struct Phase {
    seconds: f64,
    latencies_ms: Vec<f64>,
    cpu_seconds: Option<f64>,
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// User + system CPU time of this process, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
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

/// RSS of a fresh `tempest serve` that has done nothing yet.
fn idle_server_rss_mib(dir: &Path) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--db"])
        .arg(dir.join("idle.db"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let ready = child.stdout.take().map(|stdout| io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line));
    let rss = match ready {
        Some(Ok(n)) if n > 0 => {
            std::thread::sleep(Duration::from_secs(1));
            status_mib(&child.id().to_string(), "VmRSS:")
        }
        _ => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    rss
}

async fn run_phase(store: Arc<dyn RunStore>, prefix: &str, run_count: usize, in_flight: usize) -> Phase {
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(run_count)));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut drivers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (store, next, latencies, prefix) = (store.clone(), next.clone(), latencies.clone(), prefix.to_owned());
        drivers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= run_count {
                    return Ok::<(), tempest_runtime::store::Error>(());
                }
                let workflow_id = format!("{prefix}-{index}");
                let run_started = Instant::now();
                store.start(host::now(), &workflow_id, builtin::WORKFLOW_TYPE, json!({ "step_count": 3 })).await?;
                let view = store.wait_closed(&workflow_id).await?;
                assert_eq!(view.map(|v| v.status), Some("completed"), "bench run {workflow_id} did not complete");
                let ms = run_started.elapsed().as_secs_f64() * 1000.0;
                latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ms);
            }
        });
    }
    while let Some(joined) = drivers.join_next().await {
        joined.expect("bench driver").expect("the store keeps working");
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_before.zip(cpu_seconds()).map(|(before, after)| after - before);
    let mut latencies_ms = std::mem::take(&mut *latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    latencies_ms.sort_by(f64::total_cmp);
    Phase { seconds, latencies_ms, cpu_seconds }
}

pub(crate) fn run(config: &Config) -> anyhow::Result<Report> {
    let dir = PathBuf::from(format!("tempest-bench-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(config, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(config: &Config, dir: &Path) -> anyhow::Result<Report> {
    let idle_rss_mib = idle_server_rss_mib(dir);
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (store, journal) = io.block_on(sqlite::open_store(&dir.join("bench.db"), Default::default()))?;
    let store: Arc<dyn RunStore> = Arc::new(store);
    let (registry, activities) = crate::serve::workflows();
    let llm = Box::new(|| Rc::new(MockLlm::new(0)) as Rc<dyn LlmBackend>);
    let host = Host::start(store.clone(), host::Config::new(registry, activities, llm), None)?;
    io.block_on(run_phase(store.clone(), "warm-up", config.warm_up_run_count, config.in_flight));
    let commits_before = journal.stats().commit_count.load(Ordering::Relaxed);
    let records_before = journal.stats().record_count.load(Ordering::Relaxed);
    let concurrent = io.block_on(run_phase(store.clone(), "concurrent", config.concurrent_run_count, config.in_flight));
    let commit_count = journal.stats().commit_count.load(Ordering::Relaxed) - commits_before;
    let record_count = journal.stats().record_count.load(Ordering::Relaxed) - records_before;
    let sequential = io.block_on(run_phase(store.clone(), "sequential", config.sequential_run_count, 1));
    let stats = journal.stats();
    let commit_total = stats.commit_count.load(Ordering::Relaxed).max(1) as f64;
    let sqlite_commit_ms_mean = stats.commit_us_total.load(Ordering::Relaxed) as f64 / 1000.0 / commit_total;
    host.stop();
    let fsync = fsync_latencies_ms(dir, config.fsync_sample_count)?;
    let per_run = |phase: &Phase, count: usize| phase.cpu_seconds.map(|s| s * 1000.0 / count as f64);
    Ok(Report {
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        workflow: "steps: 3 sequential activities returning a string",
        path: "in-process RunStore API (start, wait_closed), SQLite on disk, WAL, synchronous=FULL",
        in_flight: config.in_flight,
        concurrent_run_count: config.concurrent_run_count,
        sequential_run_count: config.sequential_run_count,
        runs_per_second_concurrent: config.concurrent_run_count as f64 / concurrent.seconds,
        runs_per_second_concurrent_goal: RUNS_PER_SECOND_CONCURRENT_GOAL,
        runs_per_second_sequential: config.sequential_run_count as f64 / sequential.seconds,
        runs_per_second_sequential_goal: RUNS_PER_SECOND_SEQUENTIAL_GOAL,
        p50_ms_concurrent: percentile(&concurrent.latencies_ms, 0.5),
        p99_ms_concurrent: percentile(&concurrent.latencies_ms, 0.99),
        p50_ms_sequential: percentile(&sequential.latencies_ms, 0.5),
        p99_ms_sequential: percentile(&sequential.latencies_ms, 0.99),
        cpu_ms_per_run_concurrent: per_run(&concurrent, config.concurrent_run_count),
        cpu_ms_per_run_sequential: per_run(&sequential, config.sequential_run_count),
        peak_rss_mib: status_mib("self", "VmHWM:"),
        idle_rss_mib,
        idle_rss_mib_goal: IDLE_RSS_MIB_GOAL,
        fsync_ms: percentile(&fsync, 0.5),
        fsync_ms_p99: percentile(&fsync, 0.99),
        sqlite_commit_count_concurrent: commit_count,
        sqlite_records_per_commit_concurrent: record_count as f64 / commit_count.max(1) as f64,
        sqlite_commit_ms_mean,
        fast_over_full_stack: None,
    })
}

impl Report {
    pub(crate) fn write_summary(&self, out: &mut impl Write) -> io::Result<()> {
        let optional =
            |value: Option<f64>, unit: &str| value.map_or("not measured".to_owned(), |v| format!("{v:.2} {unit}"));
        writeln!(out, "bench runtime ({} build): {}", self.build, self.workflow)?;
        writeln!(out, "  path: {}", self.path)?;
        writeln!(
            out,
            "  {} in flight: {:.0} runs/s (goal {:.0}), p50 {:.2} ms, p99 {:.2} ms, CPU {} per run",
            self.in_flight,
            self.runs_per_second_concurrent,
            self.runs_per_second_concurrent_goal,
            self.p50_ms_concurrent,
            self.p99_ms_concurrent,
            optional(self.cpu_ms_per_run_concurrent, "ms"),
        )?;
        writeln!(
            out,
            "  sequential: {:.0} runs/s (goal {:.0}), p50 {:.2} ms, p99 {:.2} ms, CPU {} per run",
            self.runs_per_second_sequential,
            self.runs_per_second_sequential_goal,
            self.p50_ms_sequential,
            self.p99_ms_sequential,
            optional(self.cpu_ms_per_run_sequential, "ms"),
        )?;
        writeln!(
            out,
            "  group commit: {} commits, {:.1} records per commit, {:.2} ms per commit",
            self.sqlite_commit_count_concurrent, self.sqlite_records_per_commit_concurrent, self.sqlite_commit_ms_mean
        )?;
        writeln!(
            out,
            "  fsync: p50 {:.3} ms, p99 {:.3} ms (4 KiB append + fdatasync)",
            self.fsync_ms, self.fsync_ms_p99
        )?;
        writeln!(
            out,
            "  memory: peak RSS {}, idle server RSS {} (goal {:.0} MiB)",
            optional(self.peak_rss_mib, "MiB"),
            optional(self.idle_rss_mib, "MiB"),
            self.idle_rss_mib_goal
        )?;
        writeln!(out, "  fast_over_full_stack: not measured (the turmoil full-stack mode is not built yet)")
    }
}
